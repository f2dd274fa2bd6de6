"""Your own images: every image in a folder and its sub-folders.

    vae train dataset=image_folder dataset.path=my_images/ dataset.image_size=64 dataset.channels=3

- Files ending in .png .jpg .jpeg .bmp .gif .webp .tif .tiff are read (hidden files and folders are
  not); other files are ignored. Files that cannot be decoded are skipped with one warning that says how
  many there were and names one.
- When every image sits in a sub-folder, the first-level sub-folder names are labels (sorted: the first
  is label 0), e.g. `cats/` and `dogs/`; with any image directly in the folder there are no labels.
- Each image is converted to grey (L) or RGB per `dataset.channels`, centre-cropped to a square and
  resized to `dataset.image_size` (antialiased).
- The split is drawn once with `dataset.seed`: `dataset.test_fraction` and `dataset.val_fraction` of the
  images (at least one each) for test and validation, the rest for training.
- The images are decoded once into a uint8 tensor when that fits in memory (`dataset.in_memory=auto`:
  up to a quarter of the RAM, at most 4 GiB; `true` forces it), else they are read on demand by a
  DataLoader's workers (`false` forces that).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vae_cli.config import DatasetConfig
from vae_cli.data.base import (
    DATASETS,
    DataBundle,
    ImageSplit,
    binarize_static,
    fraction_split,
)
from vae_cli.errors import ConfigError, DataError

log = logging.getLogger("vae")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_IN_MEMORY_BYTES = 4 << 30
PARALLEL_DECODE_FROM = 2000  # fewer images decode faster in this process than with worker start-up


def resolve_path(path: str | None, data_dir: Path, dataset: str) -> Path:
    """dataset.path as given (relative to the working folder), else relative to data_dir."""
    what = "a folder of images" if dataset == "image_folder" else "a .npy, .npz, .pt or .csv file"
    if not path:
        raise ConfigError(f"dataset={dataset} needs dataset.path=<{what}>")
    given = Path(path).expanduser()
    for candidate in (given, data_dir / given):
        if candidate.exists():
            return candidate.resolve()
        if given.is_absolute():
            break
    raise DataError(f"dataset.path={path} does not exist (nor under data_dir={data_dir}): pass {what}")


def find_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under folder, recursively, sorted; hidden files and folders skipped."""
    images, others = [], []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return sorted(images), others


def folder_labels(folder: Path, files: list[Path]) -> tuple[torch.Tensor | None, list[str]]:
    """Labels from first-level sub-folder names (sorted: index = label) when every file is in one."""
    parts = [f.relative_to(folder).parts for f in files]
    if not parts or any(len(p) < 2 for p in parts):
        return None, []
    classes = sorted({p[0] for p in parts})
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[p[0]] for p in parts], dtype=torch.int64), classes


def load_image(file: Path, shape: tuple[int, int, int]) -> torch.Tensor | None:
    """One image as uint8 (C, H, W): converted to L or RGB, the centre region of the target's aspect
    ratio cropped out and resized to (H, W). None when the file cannot be decoded."""
    c, h, w = shape
    try:
        with Image.open(file) as img:
            img = img.convert("RGB" if c == 3 else "L")
    except Exception:  # noqa: BLE001  not an image, or a broken one: PIL raises many kinds
        return None
    width, height = img.size
    if width * h > height * w:  # too wide: keep the full height
        crop_w, crop_h = height * w / h, height
    else:
        crop_w, crop_h = width, width * h / w
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    img = img.resize((w, h), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.reshape(h, w, c).copy()).permute(2, 0, 1).contiguous()


def readable(file: Path) -> bool:
    """A cheap check without decoding: PIL identifies the file and its structure verifies."""
    try:
        with Image.open(file) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001
        return False


class _Decode(Dataset):
    def __init__(self, files: list[Path], shape: tuple[int, int, int]) -> None:
        self.files, self.shape = files, shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        return load_image(self.files[i], self.shape)


def decode_all(
    files: list[Path], shape: tuple[int, int, int], num_workers: int | None = None
) -> tuple[torch.Tensor, list[bool]]:
    """Decode every file once: uint8 (number readable, C, H, W), and which files were readable."""
    from vae_cli.data.loaders import default_num_workers

    workers = default_num_workers() if num_workers is None else num_workers
    if len(files) < PARALLEL_DECODE_FROM or workers == 0:
        decoded = [load_image(f, shape) for f in files]
    else:
        loader = DataLoader(_Decode(files, shape), batch_size=64, num_workers=workers, collate_fn=list)
        decoded = [image for batch in loader for image in batch]
    ok = [image is not None for image in decoded]
    images = [image for image in decoded if image is not None]
    return (torch.stack(images) if images else torch.empty(0, *shape, dtype=torch.uint8)), ok


def drop_unreadable(files: list[Path], ok: list[bool], folder: Path) -> list[Path]:
    """The readable files; one warning for all the others."""
    bad = [f for f, good in zip(files, ok, strict=True) if not good]
    if bad:
        log.warning(
            "skipped %d unreadable image file(s) in %s, e.g. %s",
            len(bad),
            folder,
            bad[0].relative_to(folder) if folder.is_dir() else bad[0].name,
        )
    return [f for f, good in zip(files, ok, strict=True) if good]


class FolderImages(Dataset):
    """uint8 (C, H, W) tensors decoded on demand (in DataLoader workers), with labels and names."""

    def __init__(
        self, files: list[Path], shape: tuple[int, int, int], labels: torch.Tensor | None, names: list[str]
    ) -> None:
        self.files, self.shape, self.labels, self.names = files, shape, labels, names

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = load_image(self.files[i], self.shape)
        if image is None:
            raise DataError(f"cannot read image {self.files[i]} (it changed since the folder was scanned?)")
        return image


def fits_in_memory(num_bytes: int) -> bool:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return num_bytes <= min(MAX_IN_MEMORY_BYTES, ram // 4)


def _collect(cfg: DatasetConfig, data_dir: Path) -> tuple[Path, list[Path], tuple[int, int, int]]:
    folder = resolve_path(cfg.path, data_dir, "image_folder")
    if not folder.is_dir():
        raise DataError(
            f"dataset.path={cfg.path} is a file; dataset=image_folder reads a folder of images "
            f"(for an array file use dataset=tensor)"
        )
    if cfg.channels not in (1, 3):
        raise ConfigError("dataset.channels must be 1 (grey) or 3 (RGB) for image_folder")
    files, others = find_images(folder)
    if not files:
        extra = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise DataError(
            f"{folder} holds no images (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))}){extra}"
        )
    if others:
        log.info(
            "ignored %d file(s) without an image extension in %s, e.g. %s",
            len(others),
            folder,
            others[0].name,
        )
    return folder, files, (cfg.channels, cfg.image_size, cfg.image_size)


@DATASETS.register("image_folder")
def image_folder(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    folder, files, shape = _collect(cfg, data_dir)
    in_memory = cfg.in_memory == "true" or (
        cfg.in_memory == "auto" and fits_in_memory(len(files) * math.prod(shape))
    )
    if in_memory:
        images, ok = decode_all(files, shape)
    else:
        if cfg.binarize == "static":
            raise ConfigError(
                "dataset.binarize=static needs the images in memory: use dataset.in_memory=true"
            )
        ok = [readable(f) for f in files]
    files = drop_unreadable(files, ok, folder)
    if not files:
        raise DataError(f"none of the image files in {folder} could be read (broken or not images)")
    labels, label_names = folder_labels(folder, files)
    names = [str(f.relative_to(folder)) for f in files]
    train, val, test = fraction_split(len(files), cfg, labels, label_names)
    if in_memory:
        everything = ImageSplit(images, labels, None, names)
        splits = [everything.subset(index) for index in (train, val, test)]
        if cfg.binarize == "static":
            splits = [binarize_static(s, cfg.seed + 1000 + i) for i, s in enumerate(splits)]
    else:
        splits = [
            FolderImages(
                [files[i] for i in index.tolist()],
                shape,
                None if labels is None else labels[index],
                [names[i] for i in index.tolist()],
            )
            for index in (train, val, test)
        ]
    log.info(
        "image_folder: %d images in %s%s, %s; %d train / %d val / %d test%s",
        len(files),
        folder,
        f" in {len(label_names)} classes ({', '.join(label_names[:5])}{', ...' if len(label_names) > 5 else ''})"
        if label_names
        else "",
        "x".join(map(str, shape)),
        len(train),
        len(val),
        len(test),
        "" if in_memory else " (read from disk)",
    )
    return DataBundle("image_folder", *splits, shape=shape, binarize=cfg.binarize, label_names=label_names)
