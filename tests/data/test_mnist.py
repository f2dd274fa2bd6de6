"""MNIST and Fashion-MNIST (vae_cli/data/mnist.py) through the real loading code, on tiny IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.data import make_idx_dataset
from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset
from vae_cli.data.mnist import read_idx, write_idx
from vae_cli.errors import DataError


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", array, compress)
    path = tmp_path / ("x.gz" if compress else "x")
    np.testing.assert_array_equal(read_idx(path), array)


def test_truncated_and_foreign_idx_files_are_explained(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros((10, 28, 28), dtype=np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"hello world, not an idx file")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "y")
    (tmp_path / "z.gz").write_bytes(gzip.compress(data)[:50])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "z.gz")


def test_mnist_splits_labels_and_fixed_validation(mnist_root: Path) -> None:
    cfg = DatasetConfig(name="mnist", val_size=20, binarize="none", download=False)
    a, b = create_dataset(cfg, mnist_root), create_dataset(cfg, mnist_root)
    assert (len(a.train), len(a.val), len(a.test)) == (100, 20, 40)
    assert a.shape == (1, 28, 28) and a.train.images.dtype == torch.uint8
    assert a.train.labels is not None and a.train.labels.dtype == torch.int64
    assert torch.equal(a.val.images, b.val.images)  # the split is carved with a fixed seed
    other = create_dataset(DatasetConfig(name="mnist", val_size=20, download=False, seed=1), mnist_root)
    assert not torch.equal(a.val.images, other.val.images)


def test_gzipped_fashion_mnist_and_static_binarisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vae_cli.data.mnist.DEBIAN_FASHION_MNIST", tmp_path / "none")
    make_idx_dataset(tmp_path, folder="FashionMNIST", compress=True)
    cfg = DatasetConfig(name="fashion_mnist", val_size=10, binarize="static", download=False)
    a, b = create_dataset(cfg, tmp_path), create_dataset(cfg, tmp_path)
    assert set(a.train.images.unique().tolist()) <= {0, 255}
    assert torch.equal(a.test.images, b.test.images)  # binarised once, the same every time


def test_missing_mnist_files_name_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        create_dataset(DatasetConfig(name="mnist", download=False), tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert name in message
