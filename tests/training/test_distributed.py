"""Data-parallel training (vae_cli/training/distributed.py) with torchrun: gloo on CPU, two processes, tiny
data. The single-process runs they are compared with, and the resumptions, run through the real CLI in
this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import REPO, only_run_dir, run_vae, torchrun, torchrun_command, vae
from vae_cli.checkpoint import load_checkpoint

TINY = [
    "dataset=synthetic",
    "dataset.size=600",
    "dataset.val_size=100",
    "dataset.test_size=100",
    "dataset.image_size=16",
    "model=mlp",
    "model.hidden_dims=[32]",
    "latent_dim=4",
    "train.epochs=2",
    "train.image_every=0",
]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path) -> None:
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    result = torchrun(["train", *TINY, "train.batch_size=16"], ddp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert vae(["train", *TINY, "train.batch_size=32"], single).returncode == 0

    run = only_run_dir(ddp)  # one set of outputs, written by rank 0 only
    assert len(list(run.glob("tensorboard/events.*"))) == 1
    got = json.loads((run / "metrics.json").read_text())
    expected = json.loads((only_run_dir(single) / "metrics.json").read_text())
    assert got["world_size"] == 2 and got["steps"] == expected["steps"]
    for split in ("train", "val", "test"):
        assert abs(got[split]["loss"] - expected[split]["loss"]) < 0.02 * expected[split]["loss"], split

    state = load_checkpoint(run / "checkpoints" / "best.ckpt")["model"]
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state)
    assert all(torch.isfinite(v).all() for v in state.values())

    # Resume with another world size: the DDP checkpoint continues in a single process.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    last = run / "checkpoints" / "last.ckpt"
    result = vae(["train", *TINY, "train.batch_size=16", "train.epochs=3", f"train.resume={last}"], resumed)
    assert result.returncode == 0, result.stderr
    assert json.loads((only_run_dir(resumed) / "metrics.json").read_text())["epochs"] == 3


def test_slurm_path_runs_one_ddp_job_with_a_task_per_process(tmp_path: Path) -> None:
    """launcher=slurm's code path, run by submitit_local: two tasks of one job become two DDP ranks."""
    result = run_vae(
        ["train", "-m", "launcher=local", "hydra.launcher.tasks_per_node=2", *TINY, "train.batch_size=16"],
        tmp_path,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = tmp_path.glob("outputs/train/multirun/*/*/*/metrics.json")
    assert json.loads(metrics.read_text())["world_size"] == 2
    assert len(list(metrics.parent.glob("tensorboard/events.*"))) == 1


def worker_pid(rank: int, parent: int) -> int | None:
    """The pid of torchrun's worker process with RANK=rank (a child of `parent`), from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_a_signal_to_one_process_stops_every_rank_with_a_resumable_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C reaching one rank only: the ranks agree to stop at the same step (inside the interval's
    all-reduce), rank 0 writes a mid-epoch checkpoint, and that checkpoint resumes."""
    args = ["train", *TINY, "train.epochs=400", "train.batch_size=16", "train.log_every=5"]
    command, env = torchrun_command(args)
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(tmp_path.glob("outputs/train/*/*/train.log"))
            pid = worker_pid(1, proc.pid)
            if pid and logs and "epoch 1/" in logs[0].read_text():
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"training did not start: {proc.poll()}")
        os.kill(pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0  # torchrun reports its workers' exit code 130 as a failure
    assert "interrupted (a signal to another process): stopped at epoch" in stderr, stderr[-3000:]
    assert f'File "{REPO / "vae_cli"}' not in stderr  # the traceback printed is torchrun's own report
    assert "rank 1 stopped at epoch" in stderr  # and rank 1 does not claim to have written a checkpoint
    last = only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] < 400 and ckpt["world_size"] == 2

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    extended = [a if a != "train.epochs=400" else f"train.epochs={ckpt['epoch'] + 1}" for a in args]
    result = vae([*extended, f"train.resume={last}"], resumed)
    assert result.returncode == 0, result.stderr
