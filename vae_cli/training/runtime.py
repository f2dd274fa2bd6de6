"""Devices, seeds and numeric precision."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
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


#: /proc/cpuinfo flags of the x86 instructions that compute in bf16 natively (AVX512-BF16 from Intel
#: Cooper Lake and AMD Zen 4, AMX-BF16 from Sapphire Rapids); without them oneDNN emulates bf16
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags() -> set[str] | None:
    """The CPU's feature flags (x86 `flags`, ARM `Features`) from /proc/cpuinfo, or None where there is
    no such file (macOS, Windows)."""
    try:
        text = open("/proc/cpuinfo").read()  # noqa: SIM115, PTH123  (a pseudo-file: read once, whole)
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


#: oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below the first with bf16 instructions (AVX512_CORE_BF16)
NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_features() -> dict[str, Any]:
    """What decides how fast this CPU trains in bf16: the bf16 instructions it has (/proc/cpuinfo), the
    ISA oneDNN may use (ONEDNN_MAX_CPU_ISA can lower it: oneDNN runs the matrix products), and torch's
    vectorised-kernel capability (AVX512, AVX2, ...). `native_bf16`: True (bf16 instructions used),
    False (bf16 emulated) or None (unknown: no /proc/cpuinfo, e.g. macOS)."""
    capability = str(torch.backends.cpu.get_cpu_capability())
    flags = _cpuinfo_flags()
    machine = platform.machine().lower()
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    native: bool | None
    if machine in ("x86_64", "amd64", "i386", "i686"):
        bf16 = {f: (None if flags is None else f in flags) for f in BF16_FLAGS}
        if flags is not None:
            native = any(bf16.values())
        else:  # no AVX-512 in torch's kernels means none in the CPU: no bf16 instructions either
            native = None if capability.upper().startswith("AVX512") else False
        if isa in NO_BF16_ISAS:
            native = False
        avx512 = "avx512bw" in flags if flags is not None else capability.upper().startswith("AVX512")
        avx512 = avx512 and not (isa.startswith(("SSE", "AVX")) and not isa.startswith("AVX512"))
    elif machine in ("aarch64", "arm64"):
        native = None if flags is None else "bf16" in flags
        bf16, avx512 = {"bf16": native}, False
    else:
        native, bf16, avx512 = None, {}, False
    return {
        "capability": capability,
        "machine": machine,
        "bf16_flags": bf16,
        "onednn_max_isa": isa or None,
        "avx512": avx512,
        "native_bf16": native,
    }


def describe_cpu_features(features: dict[str, Any] | None = None) -> str:
    """`torch capability AVX512; avx512_bf16 yes, amx_bf16 no: native bf16`."""
    f = features or cpu_features()
    flags = ", ".join(
        f"{name} {'unknown' if has is None else 'yes' if has else 'no'}"
        for name, has in f["bf16_flags"].items()
    )
    limit = f", ONEDNN_MAX_CPU_ISA={f['onednn_max_isa']}" if f.get("onednn_max_isa") else ""
    native = {True: "native bf16", False: "bf16 emulated", None: "bf16 support unknown"}[f["native_bf16"]]
    return f"torch capability {f['capability']}{limit}" + (f"; {flags}" if flags else "") + f": {native}"


def bf16_cpu_warning(features: dict[str, Any] | None = None) -> str | None:
    """What to say before training in bf16-mixed on a CPU without native bf16, with the slowdown measured
    on such CPUs; None where bf16 is native (or nothing is known)."""
    f = features or cpu_features()
    if f["native_bf16"] is not False:
        return None
    if f["avx512"]:
        measured = (
            "with AVX-512 but no bf16 instructions an MLP step took 1.8x as long as in fp32 (9 ms against "
            "5 ms, oneDNN limited to AVX512_CORE)"
        )
    else:
        measured = (
            "on an AVX2-only AMD EPYC the MLP's epoch took 11x as long as in fp32 (25.1 s against 2.2 s "
            "in `make bench`; an MLP step 47 ms against 5.6 ms with oneDNN limited to AVX2)"
        )
    return (
        f"train.precision=bf16-mixed on a CPU without native bf16 ({describe_cpu_features(f)}): bf16 is "
        f"emulated, slower than fp32: {measured}; use train.precision=32 here (bf16 pays off on CPUs "
        f"with avx512_bf16 or amx_bf16, and on GPUs)"
    )


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "16-mixed" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=16-mixed needs a CUDA device (got {device.type}): use bf16-mixed or 32"
        )
    if precision == "bf16-mixed" and device.type == "mps":
        raise ConfigError("train.precision=bf16-mixed is not supported on MPS: use train.precision=32")
    if precision == "bf16-mixed" and device.type == "cpu" and (warning := bf16_cpu_warning()):
        log.warning("%s", warning)


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
