"""Sweeps (`vae train -m beta=0.5,1,4 latent_dim=8,16`): one row per job, `summary.csv`, a table.

Every job folder of a sweep holds what its row is made of: `.hydra/overrides.yaml` and
`.hydra/config.yaml` (what the job was asked to do), `metrics.json` (written by training when it
finishes) and `job.json` (its status and error, written when the job ends, with `error.txt`, the
traceback, for a failed one). `collect()` rebuilds the rows from those files alone, so a sweep that is
still running, was interrupted or was killed can be summarised at any time (`vae report`).

`SweepSummary`, a Hydra callback (conf/train.yaml, `hydra.callbacks`), keeps `summary.csv` current:
each job, in its own worker process, writes its `job.json` and rewrites the sweep's `summary.csv` under a
file lock, through a temporary file and a rename, so the file is always whole and holds every job that
has ended; when the sweep ends, the parent rewrites it once more and prints the table. A failed job is a
row with its error: `guard_sweep` wraps the whole Hydra run, and when a sweep stops on a failed job
(Hydra's basic sweeper raises the first failure once every job of the batch has run) or on Ctrl-C, it
writes the summary, prints the table, and ends with one line saying which jobs failed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from vae_cli.errors import VaeError, describe, is_user_error

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
    "best_epoch": ("best_epoch",),
    "epochs": ("epochs",),
    "wall_time_s": ("wall_time_s",),
}
#: Config values every row has, whether or not the sweep varies them (the report plots against them).
CONFIG_COLUMNS = ("beta", "latent_dim")


class SweepFailed(VaeError):
    """Some jobs of a sweep failed or were interrupted; summary.csv says which and why."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    """Write summary.csv (one row per job) atomically: a temporary file in the folder, then a rename."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        rows = collect(sweep_dir) if rows is None else rows
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        path = sweep_dir / SUMMARY
        fd, tmp = tempfile.mkstemp(dir=sweep_dir, prefix=".summary.", suffix=".csv.tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns or ["job", "status"], restval="")
                writer.writeheader()
                writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
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
    units, MIG (when the data has factors) and each failure's error."""
    params = param_columns(rows)
    has_mig = any(isinstance(r.get("mig"), int | float) for r in rows)
    has_error = any(r.get("error") for r in rows)
    table = Table(
        title=title,
        caption="losses in nats per example; recon, KL, active units, MIG: the best checkpoint on the test split",
    )
    table.add_column("job", justify="right")
    for p in params:
        table.add_column(p, justify="right", min_width=len(p))
    table.add_column("status")
    for name in ("val loss", "test loss", "recon", "KL", "active"):
        table.add_column(name, justify="right")
    if has_mig:
        table.add_column("MIG", justify="right")
    if has_error:
        table.add_column("error", overflow="fold", max_width=60)
    for r in rows:
        cells = [str(r["job"]), *(_cell(r.get(p)) for p in params)]
        status = str(r["status"])
        cells.append(f"[{STATUS_STYLE.get(status, '')}]{status}[/]" if status in STATUS_STYLE else status)
        cells += [_num(r.get("val_loss")), _num(r.get("test_loss")), _num(r.get("test_recon"))]
        cells += [_num(r.get("test_kl")), _cell(r.get("active_units"))]
        if has_mig:
            cells.append(_num(r.get("mig"), 3))
        if has_error:
            cells.append(str(r.get("error") or ""))
        table.add_row(*cells)
    return table


def param_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns that say what each job was: beta, latent_dim and the other swept keys."""
    fixed = {"job", "status", "overrides", "folder", "error", *METRIC_COLUMNS}
    return [c for c in rows[0] if c not in fixed] if rows else []


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and value != "" else ""


def finish(sweep_dir: str | Path, title: str | None = None) -> list[dict[str, Any]]:
    """Rewrite summary.csv from the job folders and print the table; returns the rows."""
    from vae_cli.logging import console

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


# --- the Hydra callback -------------------------------------------------------------------------------------

#: Sweeps started in this process and not yet ended (normally at most one).
_ACTIVE: list[Path] = []


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


class SweepSummary(Callback):
    """Writes each job's status and the sweep's summary.csv; sets each job's torch thread count."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _ACTIVE.append(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if sweep_dir in _ACTIVE:
            _ACTIVE.remove(sweep_dir)
        finish(sweep_dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_multirun(config):
            threads = configure_threads(config.hydra.launcher)
            if threads:
                log.info("torch threads for this job: %d", threads)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config) or int(os.environ.get("RANK", "0")) > 0:
            return  # one row per job: a data-parallel job's other processes (Slurm tasks) write none
        job_dir = Path(str(config.hydra.runtime.output_dir))
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        interrupted = False
        try:
            status, error = "done", ""
            if job_return.status == JobStatus.FAILED:
                e = job_return._return_value
                interrupted = getattr(e, "exit_code", None) == 130
                status, error = ("interrupted" if interrupted else "failed"), error_line(e)
                if not is_user_error(e):  # a bug: keep its traceback
                    (job_dir / JOB_ERROR).write_text("".join(traceback.format_exception(e)))
            _write_json(job_dir / JOB_STATUS, {"status": status, "error": error})
            write_summary(sweep_dir)
        except Exception as e:  # noqa: BLE001  the summary is rebuilt at the end; never fail a job for it
            log.warning("could not update %s: %s", sweep_dir / SUMMARY, e)
        if interrupted:
            raise KeyboardInterrupt  # Ctrl-C stops the sweep, not just this job


def error_line(e: BaseException) -> str:
    """A failed job's error in one line."""
    if is_user_error(e):
        return describe(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# --- what jobs need from the launcher and the sweeper -----------------------------------------------------


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_job(launcher: Any, cores: int) -> int | None:
    """How many torch threads a job should use so that parallel jobs share the cores instead of
    oversubscribing them: joblib runs `n_jobs` at once (-1: one per core, -2: all but one, ...);
    submitit jobs get `cpus_per_task` each. None: leave torch's default (the basic, sequential launcher)."""
    target = str(OmegaConf.select(launcher, "_target_", default="") or "")
    if "joblib" in target:
        n_jobs = OmegaConf.select(launcher, "n_jobs", default=-1)
        n_jobs = -1 if n_jobs is None else int(n_jobs)
        workers = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
        return max(1, cores // max(1, min(workers, cores)))
    if "submitit" in target:
        cpus = OmegaConf.select(launcher, "cpus_per_task", default=None)
        return int(cpus) if cpus else None
    return None


def configure_threads(launcher: Any) -> int | None:
    """Set this job's torch thread count for its launcher (see threads_per_job); returns it, or None."""
    import torch

    threads = threads_per_job(launcher, available_cores())
    if threads:
        torch.set_num_threads(threads)
    return threads


def sweep_objective(result: Any) -> Any:
    """What a training job returns to Hydra: its metrics, or for an optimising sweeper (optuna, which needs
    a number) the final validation loss."""
    if not HydraConfig.initialized():
        return result
    target = str(OmegaConf.select(HydraConfig.get(), "sweeper._target_", default="") or "")
    if "optuna" not in target.lower():
        return result
    value = _dig(result, ("val", "loss"))
    return float(value) if isinstance(value, int | float) else math.nan


# --- the whole run ------------------------------------------------------------------------------------------


def guard_sweep(func: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap Hydra's run so that a sweep stopped by a failed job or Ctrl-C still gets its summary.csv and
    table, then one line: how many jobs failed, the first one's error, and where the summary is."""

    def run() -> Any:
        try:
            return func()
        except BaseException as e:
            if not _ACTIVE:
                raise
            sweep_dir = _ACTIVE.pop()
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
            raise SweepFailed(
                failure_message(rows, bad, sweep_dir, interrupted), 130 if interrupted else 1
            ) from None

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
    params = " ".join(f"{k}={_cell(first[k])}" for k in param_columns(rows) if first.get(k) != "")
    what = f"job {first['job']} ({params})"
    error = first["error"] or first["status"]
    traceback_file = sweep_dir / str(first["folder"]) / JOB_ERROR
    more = f", traceback in {traceback_file}" if traceback_file.is_file() else ""
    return f"{len(bad)} of {len(rows)} sweep jobs failed; first: {what}: {error}{more}; {where}"
