"""CelebA (vae_cli/data/celeba.py) in torchvision's layout, on a tiny copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.data import make_celeba
from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset, make_batches
from vae_cli.errors import DataError


def test_celeba_layout_crop_and_resize(celeba_root: Path) -> None:
    cfg = DatasetConfig(name="celeba", image_size=32, channels=3, crop=148, download=False)
    data = create_dataset(cfg, celeba_root)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 4)
    assert data.shape == (3, 32, 32)
    x = data.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    batches = make_batches(data.train, 5, True, 0, torch.device("cpu"), num_workers=0)
    assert [len(b) for b in batches] == [5, 5, 2]


def test_celeba_missing_files_say_what_to_place_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="img_align_celeba/.*list_eval_partition.txt"):
        create_dataset(DatasetConfig(name="celeba", download=False), tmp_path)
    make_celeba(tmp_path, (1, 1, 1))
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(DataError, match="expected"):
        create_dataset(DatasetConfig(name="celeba", download=False), tmp_path)
