"""Checkpoints (vae_cli/checkpoint.py): written atomically, so a full disk keeps the previous one."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from vae_cli.checkpoint import load_checkpoint, save_checkpoint
from vae_cli.errors import CheckpointError


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device; the previous last.ckpt is intact"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
