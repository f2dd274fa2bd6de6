"""Console output (rich) and TensorBoard logging."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

log = logging.getLogger("vae")
console = Console(stderr=True)


def batch_progress(label: str, eta: bool = False) -> Progress:
    """A transient bar over a command's batches (`vae evaluate`, `vae score`), with the time left if `eta`."""
    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=True)


def epoch_progress(enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
        # Its refresh thread takes the GIL (and a core) to render: twice a second is enough for a bar,
        # and leaves the training threads alone (rich's default is 10 times a second).
        refresh_per_second=2,
    )


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


def interleave_rows(originals: torch.Tensor, reconstructions: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of `nrow` originals, each followed by the row of their reconstructions."""
    pairs = []
    for start in range(0, len(originals), nrow):
        pairs += [originals[start : start + nrow], reconstructions[start : start + nrow]]
    return torch.cat(pairs)


def metrics_table(title: str, rows: Mapping[str, Mapping[str, float]]) -> Table:
    columns = list(next(iter(rows.values())).keys()) if rows else []
    table = Table(title=title)
    table.add_column("split")
    for c in columns:
        table.add_column(c, justify="right")
    for split, values in rows.items():
        table.add_row(split, *(fmt(values.get(c, math.nan)) for c in columns))
    return table


def fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 1e5 else f"{value:.3g}"


#: Config keys every training run records as TensorBoard HParams (plus the keys its overrides set).
HPARAM_KEYS = (
    "dataset.name",
    "model.name",
    "loss.name",
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
