"""Your own data: dataset=image_folder and dataset=tensor on tiny files written here, through the real
loading code, plus the pieces they share with training (float data, exclude_classes, corrupt, configs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vae_cli.config import (
    DatasetConfig,
    LossConfig,
    ModelConfig,
    ObjectiveConfig,
    TrainAppConfig,
    validate_train_config,
)
from vae_cli.data import ImageSplit, create_dataset, make_batches, prepare_batch
from vae_cli.data.image_folder import FolderImages
from vae_cli.data.loaders import corrupt
from vae_cli.data.tensor import unstandardize
from vae_cli.errors import ConfigError, DataError

CPU = torch.device("cpu")


def write_image_folder(root: Path, per_class: int = 6) -> Path:
    """a/ (dark) and b/ (bright) images of several sizes, modes and formats, one broken PNG, one text file."""
    rng = np.random.default_rng(0)
    for label, base in (("a", 0), ("b", 200)):
        folder = root / label
        (folder / "nested").mkdir(parents=True)
        for i in range(per_class):
            pixels = (base + rng.integers(0, 50, size=(12 + i, 20, 3))).astype(np.uint8)
            image = Image.fromarray(pixels)
            if i % 3 == 0:
                image.save(folder / f"{i}.jpg", quality=95)
            elif i % 3 == 1:
                image.convert("L").save(folder / f"{i}.png")
            else:
                image.convert("RGBA").save(folder / "nested" / f"{i}.PNG")  # upper-case, one level deeper
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "a" / ".hidden.png").write_bytes(b"skipped without a word")
    (root / "notes.txt").write_text("not an image\n")
    return root


def folder_config(path: Path, **overrides) -> DatasetConfig:
    settings = {"image_size": 8, "channels": 1, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    return DatasetConfig(name="image_folder", path=str(path), **{**settings, **overrides})


def all_names(bundle) -> list[str]:
    return sorted(n for split in (bundle.train, bundle.val, bundle.test) for n in split.names)


# --- image_folder ----------------------------------------------------------------------------------------


def test_image_folder_converts_labels_and_skips_broken_files_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_image_folder(tmp_path / "images")
    with caplog.at_level(logging.INFO, logger="vae"):
        data = create_dataset(folder_config(folder, channels=3), tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 unreadable" in warnings[0] and "broken.png" in warnings[0]
    assert data.shape == (3, 8, 8) and data.label_names == ["a", "b"]
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 2)
    assert len(all_names(data)) == 12 and not any("broken" in n or "hidden" in n for n in all_names(data))
    for split in (data.train, data.val, data.test):
        assert isinstance(split, ImageSplit) and split.images.dtype == torch.uint8
        for name, label, image in zip(split.names, split.labels.tolist(), split.images, strict=True):
            assert data.label_names[label] == name.split("/")[0]
            assert (image.float().mean() > 128) == (label == 1)  # b/ is the bright class


def test_image_folder_split_is_fixed_and_on_disk_reads_the_same(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images")
    memory = create_dataset(folder_config(folder), tmp_path)
    again = create_dataset(folder_config(folder), tmp_path)
    disk = create_dataset(folder_config(folder, in_memory="false"), tmp_path)
    other_seed = create_dataset(folder_config(folder, seed=1), tmp_path)
    assert memory.test.names == again.test.names and torch.equal(memory.train.images, again.train.images)
    assert memory.test.names != other_seed.test.names or memory.val.names != other_seed.val.names
    assert isinstance(disk.train, FolderImages) and disk.train.names == memory.train.names
    assert torch.equal(disk.train.labels, memory.train.labels)
    batch = next(iter(make_batches(disk.train, 100, False, 0, CPU, "auto", num_workers=0)))
    assert torch.equal(batch, memory.train.images)


def test_image_folder_without_sub_folders_has_no_labels_and_finds_relative_paths(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "flat"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((9, 9), 40 * i, dtype=np.uint8)).save(folder / f"{i}.bmp")
    data = create_dataset(folder_config("flat", val_fraction=0.0), tmp_path / "data")  # found under data_dir
    assert data.train.labels is None and data.label_names == []
    assert (len(data.train), len(data.val), len(data.test)) == (4, 0, 1)


def test_image_folder_exclude_classes_leaves_test_alone(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images", per_class=10)
    data = create_dataset(folder_config(folder, exclude_classes=["b"], test_fraction=0.4), tmp_path)
    assert (data.train.labels == 0).all() and (data.val.labels == 0).all()
    assert (data.test.labels == 1).any()
    with pytest.raises(ConfigError, match="unknown label 'c'.*a, b"):
        create_dataset(folder_config(folder, exclude_classes=["c"]), tmp_path)


def test_image_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs dataset.path"):
        create_dataset(DatasetConfig(name="image_folder"), tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        create_dataset(folder_config(tmp_path / "nowhere"), tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(DataError, match="holds no images.*readme.md"):
        create_dataset(folder_config(tmp_path / "empty"), tmp_path)
    with pytest.raises(DataError, match="is a file"):
        create_dataset(folder_config(tmp_path / "empty" / "readme.md"), tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"no jpeg")
    with pytest.raises(DataError, match="none of the image files"):
        create_dataset(folder_config(tmp_path / "broken"), tmp_path)


# --- tensor ----------------------------------------------------------------------------------------------


def tensor_config(path: Path, **overrides) -> DatasetConfig:
    settings = {"val_fraction": 0.2, "test_fraction": 0.2}
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


# --- shared pieces ---------------------------------------------------------------------------------------


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


def test_corrupt_gaussian_mask_and_none() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 3, 8, 8), 0.5)
    noisy = corrupt(x, "gaussian", 0.1, torch.Generator().manual_seed(0))
    assert noisy.shape == x.shape and abs(float((noisy - x).std()) - 0.1) < 0.005
    assert corrupt(x, "gaussian", 2.0, g).min() >= 0 and corrupt(x, "gaussian", 2.0, g).max() <= 1
    assert corrupt(x, "gaussian", 2.0, g, clamp=False).abs().max() > 1
    masked = corrupt(x, "mask", 0.3, g)
    zeroed = masked == 0
    assert abs(float(zeroed.float().mean()) - 0.3) < 0.02
    assert (zeroed.all(1) == zeroed.any(1)).all()  # a pixel loses all its channels at once
    assert torch.equal(masked[~zeroed], x[~zeroed])
    assert corrupt(x, "none", 0.5) is x and corrupt(x, "mask", 0.0) is x
    again = corrupt(x, "gaussian", 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)  # reproducible given the generator


def train_config(**overrides) -> OmegaConf:
    sections = {"model": ModelConfig(name="mlp"), "loss": LossConfig(name="gaussian")}
    objective = ObjectiveConfig(name="elbo")
    cfg = OmegaConf.structured(
        TrainAppConfig(dataset=DatasetConfig(name="tensor"), objective=objective, **sections)
    )
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.denoise": "blur"}, "choose one of none, gaussian, mask"),
        ({"train.denoise": "gaussian"}, "needs noise: set train.noise_level"),
        ({"train.noise_level": 0.2}, "has no effect with train.denoise=none"),
        ({"train.denoise": "mask", "train.noise_level": 1.0}, "must be < 1"),
        ({"train.denoise": "gaussian", "train.noise_level": -0.1}, "must be >= 0"),
        ({"dataset.val_fraction": 0.6, "dataset.test_fraction": 0.5}, r"dataset.test_fraction = 1.1"),
        ({"dataset.test_fraction": 1.0}, r"must be in \[0, 1\)"),
        ({"dataset.standardize": True, "loss.name": "bernoulli"}, "use loss=gaussian"),
    ],
)
def test_own_data_and_denoise_settings_are_validated(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_train_config(train_config(**overrides))
    validate_train_config(train_config(**{"train.denoise": "mask", "train.noise_level": 0.5}))
