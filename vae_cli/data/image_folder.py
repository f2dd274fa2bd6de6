"""Your own images: every image in a folder and its sub-folders.

    vae train dataset=image_folder dataset.path=my_images/ dataset.image_size=64 dataset.channels=3

The folder is read by `vae_cli.data.readers` (which image files count, labels from sub-folders, the
crop and resize). The split is drawn once with `dataset.seed`: `dataset.test_fraction` and
`dataset.val_fraction` of the images (at least one each) for test and validation, the rest for training.
The images are decoded once into a uint8 tensor when that fits in memory (`dataset.in_memory=auto`: up
to a quarter of the RAM, at most 4 GiB; `true` forces it), else they are read on demand by a
DataLoader's workers (`false` forces that). With `dataset.cache=true` (the default) they are decoded
once into a cache file (vae_cli/data/cache.py) that later runs read instead, whole or memory-mapped.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

import torch

from vae_cli.config import DatasetConfig
from vae_cli.data.base import DATASETS, DataBundle, FileSplit, ImageSplit, binarize_static, fraction_split
from vae_cli.data.cache import Cached, CacheRequest, cached_images
from vae_cli.data.readers import (
    decode_all,
    describe_files,
    drop_unreadable,
    list_images,
    load_image,
    readable,
    resolve_path,
)
from vae_cli.errors import ConfigError, DataError

log = logging.getLogger("vae")

MAX_IN_MEMORY_BYTES = 4 << 30


def holds_in_memory(in_memory: str, num_bytes: int) -> bool:
    """dataset.in_memory for data of `num_bytes`: true, false, or auto (when it fits)."""
    choice = str(in_memory).lower()  # `dataset.in_memory=false` on the command line arrives as "False"
    return choice == "true" or (choice == "auto" and fits_in_memory(num_bytes))


def folder_cache(
    cfg: DatasetConfig, folder: Path, files: list[Path], shape: tuple[int, int, int]
) -> Cached | None:
    """The decoded-image cache of the folder's images (read, or built now); None with dataset.cache=false
    or where no cache can be written."""
    mode = str(cfg.cache).lower()
    if mode == "false":
        return None
    decode = functools.partial(load_image, shape=shape)
    request = CacheRequest("image_folder", folder, folder, files, shape, None, decode)
    return cached_images(request, mode, cfg.cache_dir)


def fits_in_memory(num_bytes: int) -> bool:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return num_bytes <= min(MAX_IN_MEMORY_BYTES, ram // 4)


class FolderImages(FileSplit):
    """An image folder's split read from disk: each image decoded on demand (in DataLoader workers)."""

    def __init__(
        self, files: list[Path], shape: tuple[int, int, int], labels: torch.Tensor | None, names: list[str]
    ) -> None:
        super().__init__(files, functools.partial(load_image, shape=shape), labels, names)


@DATASETS.register("image_folder")
def image_folder(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    folder = resolve_path(cfg.path, data_dir, "image_folder")
    if not folder.is_dir():
        raise DataError(
            f"dataset.path={cfg.path} is a file; dataset=image_folder reads a folder of images "
            f"(for an array file use dataset=tensor)"
        )
    if cfg.channels not in (1, 3):
        raise ConfigError("dataset.channels must be 1 (grey) or 3 (RGB) for image_folder")
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    files = list_images(folder)
    in_memory = holds_in_memory(cfg.in_memory, len(files) * math.prod(shape))
    if not in_memory and cfg.binarize == "static":
        raise ConfigError("dataset.binarize=static needs the images in memory: use dataset.in_memory=true")
    cached = folder_cache(cfg, folder, files, shape)
    if cached is not None:
        ok = cached.readable
    elif in_memory:
        images, ok = decode_all(files, shape)
    else:
        ok = [readable(f) for f in files]
    files = drop_unreadable(files, ok, folder)
    if not files:
        raise DataError(f"none of the image files in {folder} could be read (broken or not images)")
    names, labels, label_names = describe_files(folder, files)
    train, val, test = fraction_split(len(files), cfg, labels, label_names)
    if in_memory:
        everything = ImageSplit(cached.load() if cached is not None else images, labels, None, names)
        splits = [everything.subset(index) for index in (train, val, test)]
        if cfg.binarize == "static":
            splits = [binarize_static(s, cfg.seed + 1000 + i) for i, s in enumerate(splits)]
    else:
        everything = (
            cached.split(labels, names) if cached is not None else FolderImages(files, shape, labels, names)
        )
        splits = [everything.subset(index) for index in (train, val, test)]
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
