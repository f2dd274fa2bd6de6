"""Devices, seeds and numeric precision."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from vae_cli.errors import ConfigError

log = logging.getLogger("vae")


def available_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under Slurm or taskset), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA, then Apple's MPS, then the CPU; an explicit device must exist."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device={name} is not available on this machine: use device=auto or device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16-mixed autocasts on CPU and CUDA; 16-mixed (fp16) needs CUDA and a gradient scaler."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "16-mixed" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=16-mixed needs a CUDA device (got {device.type}): use bf16-mixed or 32"
        )
    if precision == "bf16-mixed" and device.type == "mps":
        raise ConfigError("train.precision=bf16-mixed is not supported on MPS: use train.precision=32")


def maybe_compile(model: nn.Module, enabled: bool) -> Callable:
    """torch.compile the model's forward when asked and supported; otherwise the model itself."""
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as e:  # noqa: BLE001  unsupported platform or Python: train eagerly instead
        log.warning("train.compile=true skipped: torch.compile is unavailable here (%s)", e)
        return model


class GracefulStop:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM only asks the loop to stop after the current
    step, so it can write a resumable checkpoint; a second one raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        log.warning(
            "%s received: stopping after this step to write a checkpoint (again to quit at once)",
            self.requested,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
