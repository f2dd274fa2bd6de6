"""TensorBoard: scalars, image grids and the HParams summary of a run (only rank 0 writes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("vae")


class TensorBoard:
    """A SummaryWriter; disabled (writing nothing) on every process but rank 0."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        # Imported here: tensorboard and torchvision take a second or two to import, and most commands
        # that print to the console never write events.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder)) if enabled else None

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        if self.writer is not None:
            from torchvision.utils import make_grid

            grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5)
            self.writer.add_image(tag, grid, step)

    def hparams(self, params: Mapping[str, Any], metric_tags: list[str]) -> None:
        """Record this run's hyperparameters for TensorBoard's HParams tab, in the run's own events file.

        The tab shows one row per run (so a sweep's jobs side by side) with, for each metric tag, the last
        value of that scalar in this run: log the metrics with `scalars` too."""
        if self.writer is not None:
            from torch.utils.tensorboard.summary import hparams

            metrics = {tag: 0.0 for tag in metric_tags}  # only the names are recorded
            for summary in hparams(dict(params), metrics):
                self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


#: Config keys every training run records as TensorBoard HParams (plus the keys its overrides set).
HPARAM_KEYS = (
    "dataset.name",
    "model.name",
    "loss.name",
    "prior.name",
    "posterior.name",
    "latent_dim",
    "beta",
    "seed",
    "train.lr",
    "train.batch_size",
    "train.epochs",
    "train.optimizer",
    "train.weight_decay",
    "train.kl_warmup_epochs",
)


def run_hparams(cfg: Any, overrides: list[str] | None = None) -> dict[str, Any]:
    """The hyperparameters of a run as flat `key: number | string` pairs: HPARAM_KEYS and every key the
    command line (or a sweep) set. A config group (`dataset=mnist`) is recorded by its name; lists as text."""
    from omegaconf import DictConfig, OmegaConf

    if overrides is None:
        overrides = _task_overrides()
    keys = list(HPARAM_KEYS)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" in override and not key.startswith("hydra") and key not in keys:
            keys.append(key)
    params: dict[str, Any] = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig):  # a config group chosen on the command line: its name
            if f"{key}.name" in keys:
                continue
            value = value.get("name")
        elif OmegaConf.is_config(value):
            value = str(OmegaConf.to_container(value))
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, int | float | str):
            params[key] = value
    return params


def _task_overrides() -> list[str]:
    """The current Hydra job's overrides, or none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]


def log_hparams(tb: TensorBoard, cfg: Any, metrics: Mapping[str, Mapping[str, float]]) -> None:
    """The run's hyperparameters with its final metrics (`{"val": {...}, "test": {...}}`, already logged as
    scalars `val/loss`, `test/kl`, ...) for TensorBoard's HParams tab: `tensorboard --logdir <sweep
    folder>` then compares a sweep's jobs."""
    tags = [f"{split}/{name}" for split, values in metrics.items() for name in values]
    try:
        tb.hparams(run_hparams(cfg), tags)
    except Exception as e:  # noqa: BLE001  a summary the run could do without must not fail it
        log.warning("could not record the hyperparameters for TensorBoard's HParams tab: %s", e)
