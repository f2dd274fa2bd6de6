"""dataset=tensor (vae_cli/data/tensor.py): standardised features, with the train split's statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset
from vae_cli.data.tensor import unstandardize


def tensor_config(path: Path, **overrides) -> DatasetConfig:
    settings = {"val_fraction": 0.2, "test_fraction": 0.2}
    return DatasetConfig(name="tensor", path=str(path), **{**settings, **overrides})


def test_standardize_uses_the_train_split_statistics_for_every_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(100, 10, 50), rng.normal(-3, 0.1, 50), np.full(50, 7.0)]).astype(
        np.float32
    )
    np.save(tmp_path / "x.npy", x)
    data = create_dataset(tensor_config(tmp_path / "x.npy", standardize=True), tmp_path)
    assert data.stats is not None and len(data.stats["mean"]) == len(data.stats["std"]) == 3
    train = data.train.images.flatten(1)
    torch.testing.assert_close(train.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(train.std(0, unbiased=False), torch.tensor([1.0, 1.0, 0.0]), atol=1e-4, rtol=0)
    assert data.stats["std"][2] == 1.0  # a constant feature keeps std 1
    restored = unstandardize(data.test.images, data.stats)[:, 0, 0]
    expected = torch.from_numpy(x[[int(n) for n in data.test.names]])
    torch.testing.assert_close(restored, expected, atol=1e-3, rtol=1e-5)


def test_vectors_are_standardised_unless_told_otherwise_and_images_are_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.normal(50, 5, (40, 3)).astype(np.float32))
    np.save(tmp_path / "i.npy", rng.integers(0, 256, (40, 4, 4), dtype=np.uint8))
    auto = create_dataset(tensor_config(tmp_path / "v.npy"), tmp_path)  # dataset.standardize=null
    assert auto.stats is not None and abs(float(auto.train.images.mean())) < 1e-4
    kept = create_dataset(tensor_config(tmp_path / "v.npy", standardize=False), tmp_path)
    assert kept.stats is None and float(kept.train.images.mean()) > 40
    images = create_dataset(tensor_config(tmp_path / "i.npy"), tmp_path)
    assert images.stats is None and images.unit_range


def test_a_csv_table_keeps_its_feature_names(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,label,b\n" + "".join(f"{i},{i % 2},{2 * i}\n" for i in range(10)))
    data = create_dataset(tensor_config(tmp_path / "t.csv", label_column="label"), tmp_path)
    assert data.feature_names == ["a", "b"]
    np.save(tmp_path / "x.npy", np.zeros((10, 2), dtype=np.float32))
    assert create_dataset(tensor_config(tmp_path / "x.npy"), tmp_path).feature_names is None
