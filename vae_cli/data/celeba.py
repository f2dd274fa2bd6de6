"""CelebA (aligned and cropped faces), read from torchvision's folder layout, downloaded through torchvision.

    <data_dir>/celeba/img_align_celeba/000001.jpg ... 202599.jpg
    <data_dir>/celeba/list_eval_partition.txt      "<file> <0=train|1=val|2=test>" per line

Images are centre-cropped (`dataset.crop`, 148 by default) and resized to `dataset.image_size`. With
`dataset.cache=true` (the default) they are decoded once into a cache file (vae_cli/data/cache.py): held
in memory when they fit (`dataset.in_memory`), else memory-mapped; with `false`, a DataLoader decodes them.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vae_cli.config import DatasetConfig
from vae_cli.data.base import DATASETS, DataBundle, FileSplit, ImageSplit
from vae_cli.data.cache import Cached, CachedImages, CacheRequest, cached_images
from vae_cli.data.image_folder import holds_in_memory
from vae_cli.data.readers import to_pixels
from vae_cli.errors import ConfigError, DataError

PARTITIONS = {"train": 0, "val": 1, "test": 2}


def decode_celeba(path: Path, image_size: int, crop: int, mode: str) -> torch.Tensor:
    """One CelebA image as uint8 (C, S, S): centre-cropped to `crop` (0: no crop), resized to S."""
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(path) as img:
            img = to_pixels(img, 3 if mode == "RGB" else 1)  # every mode mapped as image folders are
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read CelebA image {path}: {e}") from None
    x = TF.pil_to_tensor(img)
    if crop:
        x = TF.center_crop(x, [crop, crop])
    return TF.resize(x, [image_size, image_size], antialias=True)


def read_partition(path: Path) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {name: [] for name in PARTITIONS}
    by_code = {code: name for name, code in PARTITIONS.items()}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{n}: expected '<image file> <0|1|2>', got {line!r}")
        splits[by_code[int(parts[1])]].append(parts[0])
    return splits


def _download(data_dir: Path) -> None:
    from torchvision.datasets import CelebA

    # Google Drive often refuses; the caller then explains what to place where.
    with contextlib.suppress(Exception):
        CelebA(str(data_dir), split="all", download=True)


@DATASETS.register("celeba")
def celeba(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    root = data_dir / "celeba"
    images, partition = root / "img_align_celeba", root / "list_eval_partition.txt"
    if not (images.is_dir() and partition.is_file()) and cfg.download:
        _download(data_dir)
    if not (images.is_dir() and partition.is_file()):
        raise DataError(
            f"CelebA not found and its download failed: place the folder img_align_celeba/ (the aligned "
            f"JPEGs) and list_eval_partition.txt in {root}/ (or set data_dir=/ VAE_DATA_DIR)"
        )
    if cfg.channels not in (1, 3):
        raise ConfigError("dataset.channels must be 1 or 3 for celeba")
    splits = read_partition(partition)
    for name, files in splits.items():
        if not files:
            raise DataError(f"{partition} lists no {name} images; use the original list_eval_partition.txt")
    missing = [f for f in splits["train"][:1] + splits["test"][:1] if not (images / f).is_file()]
    if missing:
        raise DataError(f"{images}/ lacks {missing[0]} named in {partition}; is the image folder complete?")
    decode = functools.partial(
        decode_celeba, image_size=cfg.image_size, crop=cfg.crop, mode="RGB" if cfg.channels == 3 else "L"
    )
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    if cfg.binarize == "static":
        raise ConfigError(
            "dataset.binarize=static needs an in-memory dataset; use none or dynamic for celeba"
        )
    files = {name: [images / f for f in listed] for name, listed in splits.items()}
    cached = celeba_cache(cfg, root, images, files, shape, decode)
    if cached is None:
        train, val, test = (FileSplit(files[name], decode) for name in PARTITIONS)
    else:
        train, val, test = cached_splits(
            cached, files, holds_in_memory(cfg.in_memory, cached.images * math.prod(shape))
        )
    return DataBundle("celeba", train, val, test, shape, binarize=cfg.binarize)


def celeba_cache(
    cfg: DatasetConfig,
    root: Path,
    images: Path,
    files: dict[str, list[Path]],
    shape: tuple[int, int, int],
    decode: Callable[[Path], torch.Tensor],
) -> Cached | None:
    """The decoded-image cache of every listed image, train then val then test (read, or built now);
    None with dataset.cache=false or where no cache can be written."""
    mode = str(cfg.cache).lower()
    if mode == "false":
        return None
    listed = [f for name in PARTITIONS for f in files[name]]
    cached = cached_images(
        CacheRequest("celeba", images, root, listed, shape, cfg.crop, decode), mode, cfg.cache_dir
    )
    if cached is not None and cached.unreadable:
        bad = listed[min(cached.unreadable)]
        raise DataError(
            f"cannot read CelebA image {bad} ({len(cached.unreadable)} unreadable in all): replace the "
            f"broken files (the cache is rebuilt then)"
        )
    return cached


def cached_splits(
    cached: Cached, files: dict[str, list[Path]], in_memory: bool
) -> tuple[ImageSplit | CachedImages, ...]:
    """train, val and test from the cache rows, which hold them one after the other."""
    names = [f.name for name in PARTITIONS for f in files[name]]
    everything = ImageSplit(cached.load(), names=names) if in_memory else cached.split(None, names)
    bounds = np.cumsum([0] + [len(files[name]) for name in PARTITIONS]).tolist()
    return tuple(everything.subset(torch.arange(a, b)) for a, b in itertools.pairwise(bounds))
