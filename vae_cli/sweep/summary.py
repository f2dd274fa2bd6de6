"""A sweep's rows (`vae train -m beta=0.5,1,4 latent_dim=8,16`): one per job, `summary.csv`, a table.

Every job folder of a sweep holds what its row is made of: `.hydra/overrides.yaml` and
`.hydra/config.yaml` (what the job was asked to do), `metrics.json` (written by training when it
finishes) and `job.json` (its status and error, written when the job ends, with `error.txt`, the
traceback, for a failed one). `collect()` rebuilds the rows from those files alone, so a sweep that is
still running, was interrupted or was killed can be summarised at any time (`vae report`).
`summary.csv` is rewritten whole under a file lock, atomically, as each job ends (callbacks.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from vae_cli.io import write_atomically

log = logging.getLogger("vae")

SUMMARY = "summary.csv"
JOB_STATUS = "job.json"
JOB_ERROR = "error.txt"

#: Numbers taken from a job's metrics.json: column -> path inside it.
METRIC_COLUMNS = {
    "val_loss": ("val", "loss"),
    "val_recon": ("val", "recon"),
    "val_kl": ("val", "kl"),
    "test_loss": ("test", "loss"),
    "test_recon": ("test", "recon"),
    "test_kl": ("test", "kl"),
    "test_neg_elbo": ("test", "neg_elbo"),
    "active_units": ("test", "active_units"),
    "mig": ("test", "mig"),
    "dci": ("test", "dci_disentanglement"),
    "best_epoch": ("best_epoch",),
    "epochs": ("epochs",),
    "wall_time_s": ("wall_time_s",),
}
#: Config values every row has, whether or not the sweep varies them (the report plots against them).
CONFIG_COLUMNS = ("beta", "latent_dim")


# --- rows ------------------------------------------------------------------------------------------------


def find_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders under a sweep folder: those holding `.hydra/overrides.yaml` (at any depth, so a
    custom `hydra.sweep.subdir` works), leaving out hidden folders such as submitit's `.submitit/`."""
    jobs = []
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if here.name == ".hydra":
            if "overrides.yaml" in files and here.parent != sweep_dir:
                jobs.append(here.parent)
            dirs[:] = []
            continue
        dirs[:] = [
            d for d in dirs if d == ".hydra" or not (d.startswith(".") or d in ("checkpoints", "tensorboard"))
        ]
    return jobs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_yaml(path: Path) -> Any:
    """Plain YAML (interpolations stay text): fast enough to reread every job folder as each job ends."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):  # missing or half-written: the row says less
        return None


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _override_pairs(overrides: list[str]) -> dict[str, str]:
    pairs = {}
    for override in overrides:
        if "=" in override:
            key, value = override.split("=", 1)
            pairs[key.lstrip("+~")] = value
    return pairs


def job_row(job_dir: Path, sweep_dir: Path | None = None) -> dict[str, Any]:
    """One job's row, from its folder alone."""
    overrides_list = _read_yaml(job_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides_list] if isinstance(overrides_list, list) else []
    config = _read_yaml(job_dir / ".hydra" / "config.yaml")
    metrics = _read_json(job_dir / "metrics.json")
    status = _read_json(job_dir / JOB_STATUS)

    prefix = job_dir.name.split("_", 1)[0]  # the default hydra.sweep.subdir starts with the job number
    num = (
        int(prefix)
        if prefix.isdigit()
        else _dig(_read_yaml(job_dir / ".hydra" / "hydra.yaml"), ("hydra", "job", "num"))
    )
    row: dict[str, Any] = {"job": num if isinstance(num, int) else -1}
    row["status"] = status.get("status") or ("done" if metrics else "unfinished")
    for key in CONFIG_COLUMNS:
        value = _dig(config, (key,))
        if value is None:  # automatic (latent_dim=null): the value the run gave it
            value = _dig(metrics, ("automatic", key))
        row[key] = value if isinstance(value, int | float) and not isinstance(value, bool) else ""
    for column, path in METRIC_COLUMNS.items():
        value = _dig(metrics, path)
        row[column] = value if isinstance(value, int | float) and not isinstance(value, bool) else ""
    row["overrides"] = " ".join(overrides)
    row["folder"] = str(job_dir.relative_to(sweep_dir)) if sweep_dir else str(job_dir)
    row["error"] = status.get("error", "") if row["status"] != "done" else ""
    row["_params"] = _override_pairs(overrides)
    return row


def varying_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between jobs (or that only some jobs set): what the sweep swept."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["_params"] if k not in keys]
    return [k for k in keys if k not in CONFIG_COLUMNS and len({row["_params"].get(k) for row in rows}) > 1]


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job's row, in job order; the swept keys besides beta and latent_dim get a column each."""
    sweep_dir = Path(sweep_dir)
    rows = sorted(
        (job_row(j, sweep_dir) for j in find_jobs(sweep_dir)), key=lambda r: (r["job"], r["folder"])
    )
    swept = varying_keys(rows)
    result = []
    for row in rows:
        params = row.pop("_params")
        ordered = {"job": row["job"], "status": row["status"]}
        ordered.update({k: row[k] for k in CONFIG_COLUMNS})
        ordered.update({k: _parse(params.get(k)) for k in swept})
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        result.append(ordered)
    return result


# --- summary.csv and the table ------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """An exclusive lock on the sweep folder (POSIX), so jobs ending together do not overwrite each
    other's rows with an older view; elsewhere (or where locks fail) the last writer wins, and the
    sweep's end rewrites the file from every folder anyway."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(sweep_dir / ".summary.lock", "a") as handle:
        with contextlib.suppress(OSError):  # a file system without locks (some network mounts)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """Write summary.csv (one row per job) atomically, under the sweep's lock."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        rows = collect(sweep_dir) if rows is None else rows
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns or ["job", "status"], restval="")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
        path = sweep_dir / SUMMARY
        write_atomically(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) and math.isfinite(value) else value


def read_summary(path: str | Path) -> list[dict[str, Any]]:
    """summary.csv back into rows, numbers as numbers."""
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse(text: str | None) -> Any:
    if text is None or text == "":
        return ""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


STATUS_STYLE = {"done": "green", "failed": "bold red", "interrupted": "yellow", "unfinished": "dim"}


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The sweep at a glance: the swept values, the status, final losses (nats per example), active
    units, MIG and DCI disentanglement (when the data has factors) and each failure's error."""
    params = param_columns(rows)
    has_mig = any(isinstance(r.get("mig"), int | float) for r in rows)
    has_dci = any(isinstance(r.get("dci"), int | float) for r in rows)
    has_error = any(r.get("error") for r in rows)
    table = Table(
        title=title,
        caption="losses in nats per example; recon, KL, active units, MIG, DCI: the best checkpoint on the test "
        "split",
    )
    table.add_column("job", justify="right")
    for p in params:
        table.add_column(p, justify="right", min_width=len(p))
    table.add_column("status")
    for name in ("val loss", "test loss", "recon", "KL", "active"):
        table.add_column(name, justify="right")
    if has_mig:
        table.add_column("MIG", justify="right")
    if has_dci:
        table.add_column("DCI", justify="right")
    if has_error:
        table.add_column("error", overflow="fold", max_width=60)
    for r in rows:
        cells = [str(r["job"]), *(cell_text(r.get(p)) for p in params)]
        status = str(r["status"])
        cells.append(f"[{STATUS_STYLE.get(status, '')}]{status}[/]" if status in STATUS_STYLE else status)
        cells += [_num(r.get("val_loss")), _num(r.get("test_loss")), _num(r.get("test_recon"))]
        cells += [_num(r.get("test_kl")), cell_text(r.get("active_units"))]
        if has_mig:
            cells.append(_num(r.get("mig"), 3))
        if has_dci:
            cells.append(_num(r.get("dci"), 3))
        if has_error:
            cells.append(str(r.get("error") or ""))
        table.add_row(*cells)
    return table


def param_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns that say what each job was: beta, latent_dim and the other swept keys."""
    fixed = {"job", "status", "overrides", "folder", "error", *METRIC_COLUMNS}
    return [c for c in rows[0] if c not in fixed] if rows else []


def cell_text(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and value != "" else ""


def finish(sweep_dir: str | Path, title: str | None = None) -> list[dict[str, Any]]:
    """Rewrite summary.csv from the job folders and print the table; returns the rows."""
    from vae_cli.console import console

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return []
    rows = collect(sweep_dir)
    if not rows:
        return rows
    path = write_summary(sweep_dir, rows)
    done = sum(r["status"] == "done" for r in rows)
    console.print(summary_table(rows, title or f"sweep {sweep_dir}: {done} of {len(rows)} jobs done"))
    console.print(f"summary in [bold]{path}[/bold]  (vae report {sweep_dir})")
    return rows
