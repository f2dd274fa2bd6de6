"""The Hydra callbacks configured in conf/train.yaml under `hydra.callbacks`.

`UniqueRunDir` gives every run (and sweep) a folder of its own, and refuses a folder named with
`hydra.run.dir`/`hydra.sweep.dir` that already holds a run (vae_cli/paths.py). `SweepSummary` keeps a sweep's
`summary.csv` current: each job, in its own worker process, writes its `job.json` and rewrites the
sweep's `summary.csv` (summary.py); when the sweep ends, the parent rewrites it once more and prints the
table. It also sets each parallel job's torch thread count.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_cli.errors import describe, is_user_error
from vae_cli.io import write_json
from vae_cli.paths import check_run_dir, hydra_quote, note_named_folder, reserve_folder
from vae_cli.sweep.guard import ACTIVE
from vae_cli.sweep.summary import JOB_ERROR, JOB_STATUS, SUMMARY, finish, write_summary
from vae_cli.training.runtime import available_cores

log = logging.getLogger("vae")


class UniqueRunDir(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._reserve(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._reserve(config, "sweep")

    @staticmethod
    def _reserve(config: DictConfig, mode: str) -> None:
        """Hydra calls this before it creates the folder or writes .hydra/ into it."""
        key = f"hydra.{mode}.dir"
        if any(o.startswith(f"{key}=") for o in config.hydra.overrides.hydra):
            # A folder the user chose explicitly is used as it is, unless it holds a run already (resuming
            # into it is allowed). Under torchrun, ranks > 0 run in the working folder and write nothing.
            if int(os.environ.get("RANK", "0")) == 0:
                folder = Path(str(OmegaConf.select(config, key)))
                check_run_dir(folder, key, OmegaConf.select(config, "train.resume", default=None))
                note_named_folder(folder)
            return
        node = config.hydra[mode]
        folder = reserve_folder(Path(str(OmegaConf.select(config, key))))
        with read_write(node), open_dict(node):
            node.dir = str(folder)
        if mode == "sweep":
            # Each job recomposes its config from the overrides: record the folder there too.
            with read_write(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"{key}={hydra_quote(str(folder))}")


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


class SweepSummary(Callback):
    """Writes each job's status and the sweep's summary.csv; sets each job's torch thread count."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        ACTIVE.append(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if sweep_dir in ACTIVE:
            ACTIVE.remove(sweep_dir)
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
            write_json(job_dir / JOB_STATUS, {"status": status, "error": error})
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


# --- what jobs need from the launcher and the sweeper -----------------------------------------------------


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
