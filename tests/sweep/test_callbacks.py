"""The Hydra callbacks (vae_cli/sweep/callbacks.py) and the configs that turn them on: a folder of its
own for every run, a share of the cores for every parallel job, and every sweep config composes with
them."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from vae_cli.sweep.callbacks import threads_per_job


def test_two_runs_in_the_same_second_get_separate_folders(tmp_path: Path) -> None:
    from vae_cli.sweep.callbacks import reserve_folder

    base = tmp_path / "outputs" / "train" / "2026-01-01" / "10-00-00"
    assert [reserve_folder(base).name for _ in range(3)] == ["10-00-00", "10-00-00_1", "10-00-00_2"]


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


@pytest.mark.parametrize(
    "choice",
    [
        "launcher=slurm",
        "launcher=local",
        "hparams_search=optuna",
        *(
            f"experiment={p.stem}"
            for p in sorted((Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml"))
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
