"""Your own arrays: vectors (tabular data) or images from one file.

    vae train dataset=tensor dataset.path=data.csv dataset.label_column=class

The file is read by `vae_cli.data.readers` (formats, shapes, labels). (N, D) arrays are vectors, for
`model=mlp` (what model=auto picks for them, with the other table defaults of vae_cli/config/auto.py);
images work with any model.

`dataset.standardize=true` (the default for vectors) maps every feature to mean 0 and std 1 with the train
split's statistics (a constant feature keeps std 1); they are kept in the bundle (`stats`) and in
checkpoints so that new files are scored on the same scale. Standardised data calls for `loss=gaussian`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from vae_cli.config import DatasetConfig
from vae_cli.config.auto import standardize_default
from vae_cli.data.base import (
    DATASETS,
    DataBundle,
    ImageSplit,
    binarize_static,
    fraction_split,
)
from vae_cli.data.readers import TENSOR_EXTENSIONS, csv_columns, read_tensor_file, resolve_path
from vae_cli.errors import ConfigError, DataError

log = logging.getLogger("vae")


def standardize(x: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    """(x - mean) / std per feature; uint8 pixels are taken as x / 255 first."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean, std = _stats_tensors(stats, x)
    return (x - mean) / std


def unstandardize(x: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    """The inverse of `standardize`: back to the file's units (pixels in [0, 1] for uint8 files)."""
    mean, std = _stats_tensors(stats, x)
    return x * std + mean


def _stats_tensors(stats: dict[str, list[float]], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = x.shape[1:]
    mean = torch.tensor(stats["mean"], dtype=x.dtype, device=x.device)
    std = torch.tensor(stats["std"], dtype=x.dtype, device=x.device)
    if mean.numel() != math.prod(shape):
        raise DataError(
            f"the standardisation statistics have {mean.numel()} features, the data {math.prod(shape)}"
        )
    return mean.view(shape), std.view(shape)


def feature_stats(x: torch.Tensor) -> dict[str, list[float]]:
    """Mean and std (population) per feature of a split; a constant feature gets std 1."""
    flat = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).flatten(1).double()
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    constant = std < 1e-8
    if constant.any():
        log.info("dataset.standardize: %d constant feature(s) keep std 1", int(constant.sum()))
    std[constant] = 1.0
    return {"mean": mean.tolist(), "std": std.tolist()}


def in_unit_range(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8 or bool(x.min() >= 0 and x.max() <= 1)


@DATASETS.register("tensor")
def tensor(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    path = resolve_path(cfg.path, data_dir, "tensor")
    if path.is_dir():
        raise DataError(
            f"dataset.path={cfg.path} is a folder; dataset=tensor reads one file (.npy, .npz, .pt, .csv); "
            f"for a folder of images use dataset=image_folder"
        )
    if path.suffix.lower() not in TENSOR_EXTENSIONS:
        raise DataError(f"dataset.path={cfg.path}: dataset=tensor reads .npy, .npz, .pt or .csv files")
    x, labels, label_names = read_tensor_file(path, cfg.label_column)
    features = (
        [c for c in csv_columns(path) if c != cfg.label_column] if path.suffix.lower() == ".csv" else None
    )
    unit = in_unit_range(x)
    scaled = cfg.standardize
    if scaled is None:  # auto (vae_cli/config/auto.py): tables are standardised, images and binary data not
        scaled = standardize_default(tuple(x.shape[1:])) and cfg.binarize == "none"
    if cfg.binarize != "none" and (scaled or not unit):
        raise ConfigError(
            f"dataset.binarize={cfg.binarize} needs values in [0, 1] (uint8 pixels, or floats in [0, 1], "
            f"not standardised): use dataset.binarize=none"
        )
    if cfg.binarize == "static" and x.dtype != torch.uint8:
        raise ConfigError("dataset.binarize=static needs uint8 pixels: use dataset.binarize=dynamic")
    names = [str(i) for i in range(len(x))]  # the example's row in the file, 0-based
    train, val, test = fraction_split(len(x), cfg, labels, label_names)
    everything = ImageSplit(x, labels, None, names)
    splits = [everything.subset(index) for index in (train, val, test)]
    stats = None
    if scaled:
        stats = feature_stats(splits[0].images)
        splits = [ImageSplit(standardize(s.images, stats), s.labels, None, s.names) for s in splits]
        unit = False
    if cfg.binarize == "static":
        splits = [binarize_static(s, cfg.seed + 1000 + i) for i, s in enumerate(splits)]
    shape = tuple(x.shape[1:])
    kind = f"{shape[-1]}-feature vectors" if shape[:2] == (1, 1) else f"{'x'.join(map(str, shape))} images"
    log.info(
        "tensor: %d examples (%s, %s%s) from %s; %d train / %d val / %d test",
        len(x),
        kind,
        "uint8 pixels" if x.dtype == torch.uint8 else "float",
        ", standardised" if stats else "",
        path,
        len(train),
        len(val),
        len(test),
    )
    return DataBundle(
        "tensor",
        *splits,
        shape=shape,
        binarize=cfg.binarize,
        label_names=label_names,
        stats=stats,
        unit_range=unit,
        feature_names=features,
    )
