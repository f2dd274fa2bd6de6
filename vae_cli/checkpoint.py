"""Checkpoints: written atomically, loaded safely, holding the fully resolved config.

A checkpoint is a plain dict of tensors and Python primitives, so `torch.load(weights_only=True)` reads
it without unpickling arbitrary objects: a checkpoint from a stranger cannot run code.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_cli.errors import CheckpointError
from vae_cli.io import copy_file, write_atomically
from vae_cli.paths import check_checkpoint_file

FORMAT = "vae-cli-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Written atomically (vae_cli.io): a crash or a full disk leaves the previous file."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    _write(path, lambda: write_atomically(path, lambda f: torch.save(payload, f)))


def copy_checkpoint(src: Path, dst: Path) -> None:
    _write(dst, lambda: copy_file(src, dst))


def _write(path: Path, write: Callable[[], None]) -> None:
    try:
        write()
    except OSError as e:
        kept = f"the previous {path.name} is intact" if path.is_file() else "nothing was written"
        raise CheckpointError(
            f"could not write {path}: {e.strerror or e}; {kept}; free disk space or choose another output "
            f"folder (hydra.run.dir=<path>)"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # Missing, a folder, not a regular file (/dev/zero), not a zip archive: each said as it is.
    path = check_checkpoint_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        # torch's own message may suggest weights_only=False: never good advice for a file from elsewhere.
        why = (
            "it holds objects other than tensors and plain values"
            if "weights_only" in str(e)
            else "truncated or corrupt"
        )
        raise CheckpointError(f"{path} is not a readable vae checkpoint ({why})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vae checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this vae reads version "
            f"{FORMAT_VERSION}; use the vae release that wrote it"
        )
    return payload


def rng_states() -> dict[str, Any]:
    """Every RNG the run draws from, as tensors and primitives (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuple(states["python"]))
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(state: Any) -> Any:
    return tuple(_as_tuple(s) for s in state) if isinstance(state, list | tuple) else state
