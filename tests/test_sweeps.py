"""Sweeps end to end on tiny synthetic data: job folders, summary.csv, the table, `vae report`, failed
jobs, the joblib and submitit launchers, the optuna sweeper, and the recipes' configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from tests.conftest import TINY_SYNTHETIC, run_vae
from vae_cli.commands.train import sweep_objective
from vae_cli.sweep.callbacks import threads_per_job
from vae_cli.sweep.summary import collect, read_summary, write_summary

FAST = [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"]


def only_sweep_dir(cwd: Path) -> Path:
    sweeps = sorted(p for p in (cwd / "outputs" / "train" / "multirun").glob("*/*") if p.is_dir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0])
    )


def test_a_2x2_sweep_writes_four_jobs_a_summary_and_a_report(tmp_path: Path) -> None:
    result = run_vae(["train", "-m", *FAST, "beta=0.5,4", "latent_dim=2,4"], tmp_path)
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
    report = run_vae(["report", str(sweep)], tmp_path)
    assert report.returncode == 0, report.stderr
    assert len(read_summary(sweep / "summary.csv")) == 4
    assert "4 of 4 jobs done" in report.stderr
    for name in ("by_beta", "by_latent_dim", "tradeoff", "samples"):
        png = sweep / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_a_failed_job_is_a_row_with_its_error_and_the_sweep_exits_nonzero(tmp_path: Path) -> None:
    result = run_vae(["train", "-m", *FAST, "beta=-1,1"], tmp_path)
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


def test_optuna_searches_and_records_every_trial(tmp_path: Path) -> None:
    result = run_vae(["train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = only_sweep_dir(tmp_path)
    rows = read_summary(sweep / "summary.csv")
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert "train.lr" in rows[0]  # the searched keys get a column each
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(r["val_loss"] for r in rows))


# --- without subprocesses ------------------------------------------------------------------------------------


def _fake_job(sweep: Path, num: int, beta: float, metrics: dict | None, status: dict | None = None) -> Path:
    job = sweep / f"{num}_beta={beta}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- beta={beta}\n- latent_dim=8\n")
    (job / ".hydra" / "config.yaml").write_text(f"beta: {beta}\nlatent_dim: 8\n")
    (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (job / "job.json").write_text(json.dumps(status))
    return job


def test_the_summary_of_an_unfinished_sweep_is_rebuilt_from_its_folders(tmp_path: Path) -> None:
    done = {"val": {"loss": 90.0}, "test": {"loss": 91.0, "recon": 80.0, "kl": 11.0, "active_units": 5}}
    _fake_job(tmp_path, 0, 1.0, done)
    _fake_job(tmp_path, 1, 4.0, None)  # still running (or killed): no metrics.json yet
    _fake_job(tmp_path, 2, 8.0, None, {"status": "failed", "error": "boom"})
    rows = collect(tmp_path)
    assert [(r["job"], r["beta"], r["status"], r["error"]) for r in rows] == [
        (0, 1.0, "done", ""),
        (1, 4.0, "unfinished", ""),
        (2, 8.0, "failed", "boom"),
    ]
    path = write_summary(tmp_path)
    back = read_summary(path)
    assert back[0]["test_loss"] == 91.0 and back[0]["active_units"] == 5 and back[1]["test_loss"] == ""
    assert not list(tmp_path.glob(".summary.*.tmp"))  # written through a temporary file, then renamed


def test_parallel_jobs_share_the_cores() -> None:
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert threads_per_job(OmegaConf.create({"_target_": joblib, "n_jobs": 2}), 16) == 8
    assert threads_per_job(OmegaConf.create({"_target_": joblib, "n_jobs": -1}), 16) == 1
    assert threads_per_job(OmegaConf.create({"_target_": joblib, "n_jobs": -3}), 16) == 1  # 14 workers
    assert threads_per_job(OmegaConf.create({"_target_": joblib, "n_jobs": 4}), 2) == 1
    submitit = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert threads_per_job(OmegaConf.create({"_target_": submitit, "cpus_per_task": 6}), 64) == 6
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert threads_per_job(OmegaConf.create({"_target_": basic}), 16) is None  # torch's own default


def test_outside_an_optuna_sweep_the_task_returns_its_metrics() -> None:
    metrics = {"val": {"loss": 1.5}}
    assert sweep_objective(metrics) is metrics


@pytest.mark.parametrize(
    "choice",
    [
        "launcher=slurm",
        "launcher=local",
        "hparams_search=optuna",
        *(
            f"experiment={p.stem}"
            for p in sorted((Path(__file__).parent.parent / "conf" / "experiment").glob("*.yaml"))
        ),
    ],
)
def test_sweep_configs_compose(choice: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vae_cli.cli import config_dir
    from vae_cli.config import register_configs, validate_train_config

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[choice], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert any(cb._target_ == "vae_cli.sweep.callbacks.SweepSummary" for cb in cfg.hydra.callbacks.values())
    if choice.startswith("launcher="):
        assert "submitit" in cfg.hydra.launcher._target_
    if choice.startswith("hparams_search"):
        assert "optuna" in cfg.hydra.sweeper._target_ and cfg.hydra.sweeper.n_trials == 20
    if choice.startswith("experiment"):
        if "sweep" in choice:
            assert cfg.hydra.sweeper.params  # the sweep recipes sweep
        with open_dict(cfg):
            del cfg["hydra"]
        validate_train_config(cfg)
