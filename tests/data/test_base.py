"""What every dataset shares (vae_cli/data/base.py): dataset.exclude_classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset
from vae_cli.errors import ConfigError


def test_exclude_classes_removes_a_class_from_train_and_val_only(mnist_root: Path, celeba_root: Path) -> None:
    cfg = DatasetConfig(name="mnist", val_size=20, download=False, exclude_classes=["3"])
    data = create_dataset(cfg, mnist_root)
    full = create_dataset(DatasetConfig(name="mnist", val_size=20, download=False), mnist_root)
    assert not (data.train.labels == 3).any() and not (data.val.labels == 3).any()
    assert torch.equal(data.test.labels, full.test.labels)
    assert len(data.train) + len(data.val) == 120 - int(
        (full.train.labels == 3).sum() + (full.val.labels == 3).sum()
    )
    with pytest.raises(ConfigError, match="needs labelled data"):
        create_dataset(DatasetConfig(name="celeba", exclude_classes=["1"], download=False), celeba_root)
