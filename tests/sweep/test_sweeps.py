"""Sweeps end to end on tiny synthetic data: job folders, summary.csv, the table, `vae report`, failed
jobs and the optuna sweeper.

Each sweep runs through the real CLI in a child process forked from this one (tests/helpers/cli.py), with
its own exit code and stderr; `vae report` runs in this process. The joblib and submitit launchers are in
test_launchers.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers.cli import fork_vae, job_dirs, only_sweep_dir, vae
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.checkpoint import load_checkpoint
from vae_cli.sweep.summary import read_summary

FAST = [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"]


def test_a_2x2_sweep_writes_four_jobs_a_summary_and_a_report(tmp_path: Path) -> None:
    result = fork_vae(["train", "-m", *FAST, "beta=0.5,4", "latent_dim=2,4"], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = only_sweep_dir(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    for job in jobs:
        assert (job / "metrics.json").is_file() and (job / "checkpoints" / "best.ckpt").is_file()
        events = b"".join(p.read_bytes() for p in (job / "tensorboard").glob("events.*"))
        assert b"_hparams_/session_start_info" in events  # TensorBoard's HParams tab sees the run
    rows = read_summary(sweep / "summary.csv")
    assert [(r["job"], r["beta"], r["latent_dim"], r["status"]) for r in rows] == [
        (0, 0.5, 2, "done"),
        (1, 4.0, 2, "done"),
        (2, 0.5, 4, "done"),
        (3, 4.0, 4, "done"),
    ]
    metrics = json.loads((jobs[3] / "metrics.json").read_text())
    assert rows[3]["test_loss"] == pytest.approx(metrics["test"]["loss"])
    assert rows[3]["active_units"] == metrics["test"]["active_units"]
    assert 0 <= rows[3]["mig"] <= 1  # synthetic data has ground-truth factors
    assert "4 of 4 jobs done" in result.stderr  # the table, printed when the sweep ends

    (sweep / "summary.csv").unlink()  # vae report rebuilds it from the job folders alone
    report = vae(["report", str(sweep)], tmp_path)
    assert report.returncode == 0, report.stderr
    assert len(read_summary(sweep / "summary.csv")) == 4
    assert "4 of 4 jobs done" in report.stderr
    for name in ("by_beta", "by_latent_dim", "tradeoff", "samples"):
        png = sweep / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_a_failed_job_is_a_row_with_its_error_and_the_sweep_exits_nonzero(tmp_path: Path) -> None:
    result = fork_vae(["train", "-m", *FAST, "beta=-1,1"], tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: 1 of 2 sweep jobs failed; first: job 0 (beta=-1 latent_dim=4)")
        and "summary.csv" in last
    )
    assert "Traceback" not in result.stderr
    rows = read_summary(only_sweep_dir(tmp_path) / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "done"]  # the job after the failed one still ran
    assert "beta=-1.0 is invalid" in rows[0]["error"]


def test_optuna_searches_and_records_every_trial(tmp_path: Path) -> None:
    result = fork_vae(["train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = only_sweep_dir(tmp_path)
    rows = read_summary(sweep / "summary.csv")
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert "train.lr" in rows[0]  # the searched keys get a column each
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(r["val_loss"] for r in rows))


def test_multirun_sweeps_beta_into_separate_job_folders(tmp_path: Path) -> None:
    result = fork_vae(
        ["train", "-m", *TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0", "beta=0.5,4"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in (tmp_path / "outputs" / "train" / "multirun").glob("*/*/*") if p.is_dir())
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    betas = [load_checkpoint(j / "checkpoints" / "last.ckpt")["config"]["beta"] for j in jobs]
    assert betas == [0.5, 4.0]
