"""A sweep stopped by a failed job or Ctrl-C still gets its summary.

Hydra's basic sweeper raises the first failure once every job of the batch has run; `guard_sweep` wraps
the whole Hydra run, and then writes the summary, prints the table, and ends with one line saying which
jobs failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vae_cli.errors import SweepFailed, SweepInterrupted
from vae_cli.sweep.summary import JOB_ERROR, SUMMARY, cell_text, finish, param_columns

log = logging.getLogger("vae")

#: Sweeps started in this process and not yet ended (normally at most one).
ACTIVE: list[Path] = []


def guard_sweep(func: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap Hydra's run so that a sweep stopped by a failed job or Ctrl-C still gets its summary.csv and
    table, then one line: how many jobs failed, the first one's error, and where the summary is."""

    def run() -> Any:
        try:
            return func()
        except BaseException as e:
            if not ACTIVE:
                raise
            sweep_dir = ACTIVE.pop()
            try:
                rows = finish(sweep_dir)
            except Exception as summary_error:  # noqa: BLE001  keep the original failure visible
                log.warning("could not write the sweep summary: %s", summary_error)
                raise e from None
            bad = [r for r in rows if r["status"] != "done"]
            if not bad or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            interrupted = isinstance(e, KeyboardInterrupt | SystemExit) or any(
                r["status"] == "interrupted" for r in bad
            )
            error = SweepInterrupted if interrupted else SweepFailed
            raise error(failure_message(rows, bad, sweep_dir, interrupted)) from None

    return run


def failure_message(
    rows: list[dict[str, Any]], bad: list[dict[str, Any]], sweep_dir: Path, interrupted: bool
) -> str:
    done = len(rows) - len(bad)
    where = f"every job's status is in {sweep_dir / SUMMARY}"
    if interrupted:
        return (
            f"sweep interrupted after {done} finished job{'s' if done != 1 else ''}; the interrupted job's "
            f"error column says how to resume it; {where}"
        )
    first = next((r for r in bad if r["status"] == "failed"), bad[0])
    params = " ".join(f"{k}={cell_text(first[k])}" for k in param_columns(rows) if first.get(k) != "")
    what = f"job {first['job']} ({params})"
    error = first["error"] or first["status"]
    traceback_file = sweep_dir / str(first["folder"]) / JOB_ERROR
    more = f", traceback in {traceback_file}" if traceback_file.is_file() else ""
    return f"{len(bad)} of {len(rows)} sweep jobs failed; first: {what}: {error}{more}; {where}"
