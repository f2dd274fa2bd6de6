"""Hydra's launchers that start processes of their own: joblib (parallel jobs on this machine, a share of
the cores each) and submitit's local executor (launcher=local, the code path of launcher=slurm).

Each sweep runs through the real CLI in a fresh interpreter (tests/helpers/cli.py): the launchers' worker
processes are ended when that interpreter exits, as they would be for a user."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import job_dirs, only_sweep_dir, run_vae
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.sweep.summary import read_summary

FAST = [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"]


def test_joblib_runs_a_two_job_sweep_in_parallel_with_a_share_of_the_cores_each(tmp_path: Path) -> None:
    result = run_vae(
        ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, "beta=0.5,4"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    sweep = only_sweep_dir(tmp_path)
    assert [r["status"] for r in read_summary(sweep / "summary.csv")] == ["done", "done"]
    for job in job_dirs(sweep):
        assert "torch threads for this job:" in (job / "train.log").read_text()


def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path) -> None:
    result = run_vae(["train", "-m", "launcher=local", *FAST, "beta=0.5,4"], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = only_sweep_dir(tmp_path)
    rows = read_summary(sweep / "summary.csv")
    assert [(r["beta"], r["status"]) for r in rows] == [(0.5, "done"), (4.0, "done")]
    assert (sweep / ".submitit").is_dir()  # it went through submitit, as on a Slurm cluster
