"""vae: train, sample, reconstruct and evaluate VAEs from the command line.

from vae_cli import load_model
model = load_model("outputs/train/2024-05-01/12-00-00")   # a run folder or a .ckpt file
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import vae_cli` (and the CLI's start-up) does not load torch for nothing.
    if name == "load_model":
        from vae_cli.api import load_model

        return load_model
    raise AttributeError(f"module 'vae_cli' has no attribute {name!r}")
