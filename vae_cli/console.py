"""Console output: rich progress bars and tables, and how numbers are shown."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

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
