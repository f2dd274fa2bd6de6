"""Devices and precision (vae_cli/training/runtime.py): torch.compile and bf16 autocast train on the CPU.

The run is a child forked from this process (tests/helpers/cli.py), so that torch.compile's caches and
compile workers do not stay in the test process."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.cli import fork_vae, only_run_dir
from tests.helpers.data import TINY_SYNTHETIC


def test_compile_and_bf16_train_on_cpu(tmp_path: Path) -> None:
    args = [
        "train",
        *(o for o in TINY_SYNTHETIC if not o.startswith("model.")),  # conv's keys
        "model=mlp",
        "train.epochs=1",
        "train.image_every=0",
        "train.compile=true",
        "train.precision=bf16-mixed",
    ]
    result = fork_vae(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert math.isfinite(json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())["test"]["loss"])
