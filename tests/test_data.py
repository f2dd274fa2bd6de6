"""Datasets through the real loading code, on tiny files in the real on-disk formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_celeba, make_idx_dataset
from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset, make_batches, prepare_batch
from vae_cli.data.mnist import read_idx, write_idx
from vae_cli.data.synthetic import FACTOR_NAMES, generate
from vae_cli.errors import ConfigError, DataError


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


def test_synthetic_is_reproducible_and_keeps_factors() -> None:
    a, b = generate(200, 32, seed=3), generate(200, 32, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert a.images.shape == (200, 1, 32, 32) and a.factors.shape == (200, len(FACTOR_NAMES))
    assert set(a.images.unique().tolist()) == {0, 255}
    assert (a.images.flatten(1).amax(1) == 255).all()  # every image shows its shape
    assert set(a.factors[:, 0].long().tolist()) == {0, 1, 2, 3}
    assert not torch.equal(a.images, generate(200, 32, seed=4).images)


def test_synthetic_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match="dataset.size"):
        create_dataset(DatasetConfig(name="synthetic", size=100, val_size=60, test_size=60), ".")


def test_dynamic_binarisation_draws_fresh_bernoullis() -> None:
    images = torch.full((2000, 1, 4, 4), 64, dtype=torch.uint8)  # intensity 0.25
    x = prepare_batch(images, "dynamic")
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert abs(x.mean().item() - 64 / 255) < 0.01
    assert torch.equal(prepare_batch(images, "none"), torch.full((2000, 1, 4, 4), 64 / 255))
    assert not torch.equal(x, prepare_batch(images, "dynamic"))  # fresh draws every time
    extremes = torch.tensor([0, 255], dtype=torch.uint8).repeat(5000).view(-1, 1, 1, 2)
    drawn = prepare_batch(extremes, "dynamic")
    assert drawn[..., 0].eq(0).all() and drawn[..., 1].eq(1).all()  # black stays 0, white stays 1
    levels = torch.arange(0, 256, 15, dtype=torch.uint8).repeat(4000, 1).view(4000, 1, 1, -1)
    g = torch.Generator().manual_seed(0)
    means = prepare_batch(levels, "dynamic", g).mean(0).flatten()
    torch.testing.assert_close(means, levels[0].flatten().float() / 255, atol=0.025, rtol=0)
