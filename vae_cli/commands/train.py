"""`vae train`: the training loop (vae_cli/training/loop.py) as a command; in a sweep, it also hands the
sweeper what it optimises."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def train(cfg: DictConfig, run_dir: Path) -> Any:
    from vae_cli.training.loop import train as train_model

    return sweep_objective(train_model(cfg, run_dir))


def sweep_objective(result: Any) -> Any:
    """What a training job returns to Hydra: its metrics, or for an optimising sweeper (optuna, which needs
    a number) the final validation loss."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return result
    target = str(OmegaConf.select(HydraConfig.get(), "sweeper._target_", default="") or "")
    if "optuna" not in target.lower():
        return result
    value = result.get("val", {}).get("loss") if isinstance(result, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan
