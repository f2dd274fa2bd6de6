"""Interrupts, crashes and divergence lose nothing and explain themselves.

The runs that get a signal are fresh interpreters (`python -m vae_cli`), as a user's would be; the runs
they are compared with, and their resumptions, run through the real CLI in this process; the runs that
must fail run in forked children, for their exit code and stderr (tests/helpers/cli.py)."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import fork_vae, metrics_of, run_dirs, start_vae, vae
from vae_cli.checkpoint import load_checkpoint

#: A fast MLP on tiny synthetic data: many short epochs, so signals land mid-training.
FAST = [
    "dataset=synthetic",
    "dataset.size=400",
    "dataset.val_size=40",
    "dataset.test_size=40",
    "dataset.image_size=16",
    "model=mlp",
    "model.hidden_dims=[32]",
    "latent_dim=4",
    "train.batch_size=16",
    "train.image_every=0",
]


def wait_for_training(cwd: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run has logged its first line from inside the loop (signal handlers are installed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(cwd.glob("outputs/train/*/*/train.log"))
        if logs and "epoch 1/" in logs[0].read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not start: {proc.poll()}")


def assert_same_metrics(got: dict, expected: dict) -> None:
    assert got["steps"] == expected["steps"]
    for split in ("train", "val", "test"):
        for key in ("loss", "recon", "kl"):
            assert got[split][key] == pytest.approx(expected[split][key], rel=1e-5), (split, key)


def test_sigint_writes_a_checkpoint_that_resumes_to_the_same_result(tmp_path: Path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    args = ["train", *FAST, "train.epochs=12"]
    proc = start_vae(args, interrupted)
    wait_for_training(interrupted, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "train.resume=" in stderr and "SIGINT" in stderr
    resume = stderr.split("train.resume=")[1].split()[0]
    ckpt = load_checkpoint(resume)
    assert ckpt["epoch"] < 12

    result = vae([*args, f"train.resume={resume}"], interrupted)
    assert result.returncode == 0, result.stderr
    assert vae(args, straight).returncode == 0
    assert_same_metrics(metrics_of(run_dirs(interrupted)[-1]), metrics_of(run_dirs(straight)[0]))


def wait_for_new_run(cwd: Path, proc: subprocess.Popen, known: set[Path], timeout: float = 120) -> None:
    """Until a run folder that is not in `known` has a log saying the training loop started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for log in cwd.glob("outputs/train/*/*/train.log"):
            if log.parent not in known and "training " in log.read_text():
                return
        time.sleep(0.02)


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """Kill -9 a training run at random points, resume from its last checkpoint each time: every
    checkpoint on disk stays loadable and the final metrics equal an uninterrupted run's."""
    straight, faulty = tmp_path / "straight", tmp_path / "faulty"
    straight.mkdir(), faulty.mkdir()
    args = ["train", *FAST, "train.epochs=20"]
    assert vae(args, straight).returncode == 0
    duration = metrics_of(run_dirs(straight)[0])["wall_time_s"]  # the training loop's time, uninterrupted
    rng = random.Random(1234)
    resume: Path | None = None
    kills = 0
    for _ in range(12):
        known = set(run_dirs(faulty))
        proc = start_vae([*args, *([f"train.resume={resume}"] if resume else [])], faulty)
        if kills < 3:  # three kills (at least two mid-run), then a run to the end
            wait_for_new_run(faulty, proc, known)
            time.sleep(rng.uniform(0.0, 0.3 * duration))  # so that at least two kills land mid-run
            if proc.poll() is None:
                proc.kill()
                kills += 1
        proc.communicate(timeout=300)
        for ckpt in faulty.glob("outputs/train/*/*/checkpoints/*.ckpt"):
            load_checkpoint(ckpt)  # never half-written
        if proc.returncode == 0:
            break
        lasts = sorted(
            faulty.glob("outputs/train/*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
        )
        resume = lasts[-1] if lasts else resume
    assert proc.returncode == 0 and kills >= 2
    assert_same_metrics(metrics_of(run_dirs(faulty)[-1]), metrics_of(run_dirs(straight)[0]))


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert vae(["train", *FAST, "train.epochs=1", f"hydra.run.dir={run}"], tmp_path).returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    result = fork_vae(
        ["train", *FAST, "train.epochs=3", "train.lr=1e10", f"train.resume={last}", f"hydra.run.dir={run}"],
        tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "non-finite training loss" in error[0] and "epoch 2, step" in error[0] and "train.lr" in error[0]
    assert str(last) in error[0]
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1


def test_skip_nonfinite_skips_bad_steps_then_gives_up(tmp_path: Path) -> None:
    result = fork_vae(["train", *FAST, "train.epochs=1", "train.lr=1e10", "train.skip_nonfinite=2"], tmp_path)
    assert result.returncode == 1
    assert len(re.findall(r"skipped step \d+ of epoch", result.stderr)) == 3
    assert "more than 2 skipped steps" in result.stderr and "Traceback" not in result.stderr
