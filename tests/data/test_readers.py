"""The readers of the files users bring (vae_cli/data/readers.py): folders of images, and arrays in
.npy, .npz, .pt and .csv files read through dataset=tensor, with errors that name the line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.data import write_inputs
from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset, make_batches, prepare_batch
from vae_cli.errors import ConfigError, DataError

CPU = torch.device("cpu")


def test_read_images_converts_mode_and_size(tmp_path: Path) -> None:
    from vae_cli.data.readers import read_images

    folder = write_inputs(tmp_path / "in")
    found = read_images(folder, (3, 8, 8))
    assert [f.name for f in found.files] == ["grey.png", "wide.jpg"]
    assert found.images.shape == (2, 3, 8, 8) and found.images.dtype == torch.uint8
    found = read_images(folder / "wide.jpg", (1, 12, 12))
    assert found.images.shape == (1, 1, 12, 12)


# --- arrays (dataset=tensor) --------------------------------------------------------------------------


def tensor_config(path: Path, **overrides) -> DatasetConfig:
    settings = {"val_fraction": 0.2, "test_fraction": 0.2, "standardize": False}  # the file's values
    return DatasetConfig(name="tensor", path=str(path), **{**settings, **overrides})


def test_npy_vectors_are_float_rows_that_prepare_batch_passes_through(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(20, 5)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    data = create_dataset(tensor_config(tmp_path / "x.npy"), tmp_path)
    assert data.shape == (1, 1, 5) and data.train.images.dtype == torch.float32
    assert data.stats is None and not data.unit_range and data.train.labels is None
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 4)
    rows = torch.stack([torch.from_numpy(x[int(n)]).float() for n in data.test.names])
    assert torch.equal(data.test.images[:, 0, 0], rows)  # names are the rows of the file
    batch = next(iter(make_batches(data.train, 4, False, 0, CPU)))
    assert torch.equal(prepare_batch(batch, "none"), batch)  # floats are used as they are


def test_uint8_images_npz_labels_pt_dicts_and_channels_last(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 6, 7), dtype=np.uint8)
    labels = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    data = create_dataset(tensor_config(tmp_path / "d.npz"), tmp_path)
    assert data.shape == (1, 6, 7) and data.train.images.dtype == torch.uint8 and data.unit_range
    assert prepare_batch(data.train.images, "none").max() <= 1.0  # uint8 means pixels in 0..255
    assert sorted(torch.cat([data.train.labels, data.val.labels, data.test.labels]).tolist()) == sorted(
        labels
    )

    rgb = torch.from_numpy(rng.random((8, 5, 5, 3)).astype(np.float32))  # (N, H, W, C)
    torch.save({"x": rgb, "labels": torch.arange(8)}, tmp_path / "d.pt")
    data = create_dataset(tensor_config(tmp_path / "d.pt"), tmp_path)
    assert data.shape == (3, 5, 5) and data.unit_range and data.train.labels is not None
    torch.save(rgb.permute(0, 3, 1, 2)[:, :, :, :4], tmp_path / "t.pt")  # a plain tensor
    assert create_dataset(tensor_config(tmp_path / "t.pt"), tmp_path).shape == (3, 5, 4)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_csv_features_and_a_named_label_column(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},{'cat' if i % 2 else 'dog'},{-i}" for i in range(10))
    path = write_csv(tmp_path / "t.csv", f"a,b,kind,c\n{rows}")
    data = create_dataset(tensor_config(path, label_column="kind"), tmp_path)
    assert data.shape == (1, 1, 3) and data.label_names == ["cat", "dog"]
    for split in (data.train, data.val, data.test):
        for name, label, row in zip(split.names, split.labels.tolist(), split.images[:, 0, 0], strict=True):
            i = int(name)
            assert row.tolist() == [i, i * 0.5, -i] and label == (0 if i % 2 else 1)
    headerless = write_csv(tmp_path / "h.csv", "\n".join(f"{i},{i + 1},{i % 2}" for i in range(6)))
    data = create_dataset(tensor_config(headerless, label_column="2"), tmp_path)
    assert data.shape == (1, 1, 2) and data.label_names == [] and set(data.train.labels.tolist()) <= {0, 1}


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("a,b\n1,2\n3,abc\n5,6", {}, r"line 3, column 'b': 'abc' is not a number"),
        ("a,b\n1,2\n3,\n5,6", {}, r"line 3, column 'b': is empty"),
        ("a,b\n1,2\n3,4,5", {}, r"line 3: 3 values, but 2 columns"),
        ("a,b\n1,2\n3,nan", {}, r"line 3, column 'b': 'nan' is not a finite number"),
        ("a,b\n1,2", {"label_column": "kind"}, r"no column 'kind'.*a, b"),
        ("a,b", {}, "no rows of data"),
    ],
)
def test_bad_csv_values_name_the_line_and_column(
    tmp_path: Path, text: str, overrides: dict, message: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message):
        create_dataset(tensor_config(path, **overrides), tmp_path)


def test_bad_arrays_are_explained(tmp_path: Path) -> None:
    x = np.ones((6, 3), dtype=np.float32)
    x[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match="example 4 .*NaN"):
        create_dataset(tensor_config(tmp_path / "nan.npy"), tmp_path)
    np.save(tmp_path / "flat.npy", np.ones(6))
    with pytest.raises(DataError, match=r"shape \(6,\)"):
        create_dataset(tensor_config(tmp_path / "flat.npy"), tmp_path)
    (tmp_path / "fake.npy").write_text("hello")
    with pytest.raises(DataError, match="cannot read"):
        create_dataset(tensor_config(tmp_path / "fake.npy"), tmp_path)
    with pytest.raises(DataError, match="reads .npy, .npz, .pt or .csv"):
        create_dataset(tensor_config(write_csv(tmp_path / "x.txt", "1,2")), tmp_path)
    with pytest.raises(DataError, match="is a folder"):
        create_dataset(tensor_config(tmp_path), tmp_path)
    with pytest.raises(ConfigError, match="needs dataset.path"):
        create_dataset(DatasetConfig(name="tensor"), tmp_path)
