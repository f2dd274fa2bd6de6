"""dataset=image_folder (vae_cli/data/image_folder.py) on tiny folders of images written here."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_cli.config import DatasetConfig
from vae_cli.data import ImageSplit, create_dataset, make_batches
from vae_cli.data.image_folder import FolderImages
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
    disk = create_dataset(folder_config(folder, in_memory="false", cache="false"), tmp_path)
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
