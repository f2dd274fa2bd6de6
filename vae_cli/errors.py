"""User-facing errors: anything the user can fix by changing an argument, a file or a path.

They are printed as one line, `error: ...`, with exit code 2 (130 for an interrupt) and no traceback;
`HYDRA_FULL_ERROR=1` shows the traceback for debugging.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vae")


class VaeError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""

    exit_code = 2


class ConfigError(VaeError):
    """A config value is of the right type but not allowed (range, choice, combination)."""


class DataError(VaeError):
    """A dataset is missing, incomplete or unreadable."""


class CheckpointError(VaeError):
    """A checkpoint is missing, truncated, foreign or incompatible."""


class OutOfMemory(VaeError):
    """The machine ran out of memory (RAM or GPU memory) for the settings given; the message names them."""


class TrainingStopped(VaeError):
    """Training stopped early (a non-finite loss); the last good checkpoint is kept."""

    exit_code = 1


class Interrupted(TrainingStopped):
    """A signal (Ctrl-C, SIGTERM) stopped training; a checkpoint says where to resume."""

    exit_code = 130


class SweepFailed(VaeError):
    """Some jobs of a sweep failed; summary.csv says which and why."""

    exit_code = 1


class SweepInterrupted(SweepFailed):
    """A sweep was interrupted; summary.csv holds the jobs that finished."""

    exit_code = 130


#: errno values that mean "the user's disk or folder", not a bug.
USER_OS_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}
_NOISE = re.compile(
    r"^\s*(full_key|object_type|reference_type|Set the environment variable HYDRA_FULL_ERROR)"
)


def one_line(message: str) -> str:
    """Squeeze a multi-line (Hydra/OmegaConf) message into one line, keeping what says what to fix."""
    lines = []
    for line in str(message).splitlines():
        if line.strip().startswith("Config search path"):
            break
        if line.strip() and not _NOISE.match(line):
            lines.append(line.strip())
    text = " ".join(lines)
    return re.sub(r"Available options in '(\w+)': ", r"available options in '\1': ", text)


def is_user_error(ex: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(ex, VaeError | HydraException | OmegaConfBaseException):
        return True
    return isinstance(ex, OSError) and ex.errno in USER_OS_ERRORS


def exit_on_user_error(func: Callable[[], Any], in_sweep: bool = False) -> Any:
    """Run func; a user error becomes one line on stderr and its class's exit code (2 unless it says
    otherwise), a second Ctrl-C exit code 130; anything else (a bug) keeps its traceback. In a sweep's
    job the error is logged and raised on, so that the sweep records the job as failed.

    Wraps each command's task, and Hydra's own run (as its run_and_report) for composition errors."""
    try:
        return func()
    except KeyboardInterrupt:
        # Checkpoints and outputs are written atomically, so nothing on disk is half-written.
        print("interrupted: stopped at once; the files on disk are intact", file=sys.stderr)
        sys.exit(130)
    except Exception as ex:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not is_user_error(ex):
            raise
        # An interrupt is the user's own doing, not an error: its message starts "interrupted (SIGINT)".
        prefix = "" if isinstance(ex, Interrupted | SweepInterrupted) else "error: "
        if in_sweep:
            log.error("%s%s", prefix, describe(ex))
            raise
        print(f"{prefix}{describe(ex)}", file=sys.stderr)
        sys.exit(getattr(ex, "exit_code", VaeError.exit_code))


def describe(ex: BaseException) -> str:
    """One line for a user error, with the underlying cause where Hydra wraps one."""
    from hydra.errors import HydraException

    if isinstance(ex, OSError) and not isinstance(ex, VaeError | HydraException):
        where = f" {ex.filename}" if ex.filename else ""
        return (
            f"cannot write{where}: {ex.strerror}; check the path and its permissions and free space, "
            f"or choose another output folder with hydra.run.dir=<path>"
        )
    text = one_line(str(ex))
    cause = ex.__cause__
    if cause is not None and not isinstance(ex, VaeError):
        cause_text = one_line(str(cause))
        if cause_text and cause_text not in text:
            text = f"{text}: {cause_text}"
    return text


#: the settings that decide how much memory each command needs, in the order to lower them
MEMORY_SETTINGS: dict[str, tuple[str, ...]] = {
    "train": ("train.batch_size", "dataset.image_size", "objective.k"),
    "sample": ("n",),
    "reconstruct": ("n",),
    "evaluate": ("batch_size", "chunk", "iwae_k"),
    "score": ("batch_size", "chunk", "iwae_k"),
    "embed": ("batch_size", "n"),
}


def out_of_memory(e: BaseException, command: str, cfg: Any) -> OutOfMemory | None:
    """A one-line error naming the settings to lower when `e` is running out of memory (torch's CPU or
    CUDA allocator, or Python's MemoryError); None for any other error."""
    from omegaconf import OmegaConf

    text = str(e)
    cpu_allocator = isinstance(e, RuntimeError) and "DefaultCPUAllocator" in text
    if isinstance(e, MemoryError) or cpu_allocator:
        where = "memory (RAM)"
    elif type(e).__name__ == "OutOfMemoryError" or (isinstance(e, RuntimeError) and "out of memory" in text):
        where = "GPU memory" if "CUDA" in text or "cuda" in text else "memory"
    else:
        return None
    shown, keys = [], []
    for key in MEMORY_SETTINGS.get(command, ()):
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue  # e.g. objective.k under objective=elbo
        value = OmegaConf.select(cfg, key)
        shown.append(f"{key}={value}" if value is not None else f"{key} (automatic)")
        keys.append(key)
    settings = f" with {', '.join(shown)}" if shown else ""
    lower = f": lower {' or '.join(keys)}" if keys else ""
    return OutOfMemory(f"out of {where}{settings}{lower}")
