"""Console output (rich) and TensorBoard logging."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

log = logging.getLogger("vae")
console = Console(stderr=True)


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
    )


class TensorBoard:
    """A SummaryWriter; disabled (writing nothing) on every process but rank 0."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.writer = SummaryWriter(str(folder)) if enabled else None

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        if self.writer is not None:
            grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5)
            self.writer.add_image(tag, grid, step)

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
