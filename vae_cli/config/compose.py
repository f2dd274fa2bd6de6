"""Composing a command's config as Hydra would, without running it: for the checks made before Hydra
runs, for `--help`, and for benchmarks, tests and notebooks (`compose_config`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_cli.config import register_configs


def config_dir() -> Path:
    """The configs shipped inside the wheel, else the checkout's top-level conf/ (editable installs)."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "conf"
    return packaged if packaged.is_dir() else package.parent / "conf"


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The resolved config `vae <config_name> <overrides>` would run with, composed without the CLI
    (for benchmarks, tests and notebooks)."""
    return compose_run(overrides, config_name)[0]


def compose_run(overrides: list[str], config_name: str) -> tuple[DictConfig, DictConfig]:
    """(the resolved config, what Hydra would make of it: its mode, run.dir and sweep.dir resolved, and
    the option chosen in each config group)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    hydra_node = OmegaConf.create(
        {
            "mode": getattr(OmegaConf.select(cfg, "hydra.mode", default=None), "name", ""),
            "run_dir": str(OmegaConf.select(cfg, "hydra.run.dir")),
            "sweep_dir": str(OmegaConf.select(cfg, "hydra.sweep.dir")),
            "choices": OmegaConf.to_container(cfg.hydra.runtime.choices),
        }
    )
    with open_struct_off(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg, hydra_node


@contextlib.contextmanager
def open_struct_off(cfg: DictConfig) -> Any:
    from omegaconf import flag_override

    with flag_override(cfg, ["struct", "readonly"], [False, False]):
        yield
