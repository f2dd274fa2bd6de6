"""Console output: rich progress bars and tables, and how numbers are shown."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping

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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """vae's progress bars and results tables stay silent inside (the benchmarks print their own)."""
    was, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = was


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
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not enabled,
        # Its refresh thread takes the GIL (and a core) to render: twice a second is enough for a bar,
        # and leaves the training threads alone (rich's default is 10 times a second).
        refresh_per_second=2,
    )


#: Outside a terminal (a log file, a pipe, a CI job), where no bar is drawn, training logs a line at
#: least this often during an epoch
STEP_LOG_SECONDS = 15.0


class StepLog:
    """The progress bar's stand-in where none can be drawn: every STEP_LOG_SECONDS during an epoch, a
    line `epoch 1/10: 120/625 steps (19%), 15 s so far, about 1 min 03 s left in this epoch`.

    `advance()` runs every step: it reads the clock only (no device sync, no loss)."""

    def __init__(
        self,
        epoch: int,
        epochs: int,
        total: int,
        done: int = 0,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epoch, self.epochs, self.total, self.clock = epoch, epochs, max(1, total), clock
        self.every = STEP_LOG_SECONDS if every is None else every
        self.start_done, self.done = done, done  # a mid-epoch resume starts part-way
        self.start = self.last = clock()

    def advance(self) -> None:
        self.done += 1
        now = self.clock()
        if now - self.last < self.every or self.done >= self.total:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / max(1, self.done - self.start_done) * (self.total - self.done)
        log.info(
            "epoch %d/%d: %d/%d steps (%d%%), %s so far, about %s left in this epoch",
            self.epoch,
            self.epochs,
            self.done,
            self.total,
            100 * self.done // self.total,
            duration(elapsed),
            duration(left),
        )


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def log_to_files(message: str, level: int = logging.WARNING) -> None:
    """`message` into the log files only (`<run>/train.log`), not again on the console: for what the
    command prints itself as it exits (the resume command of an interrupted run)."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for logger in (log, logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)


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


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform knows: for benchmark headers."""
    import contextlib
    import platform
    from pathlib import Path

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
