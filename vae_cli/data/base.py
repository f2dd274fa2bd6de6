from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vae_cli.config import DatasetConfig
from vae_cli.errors import ConfigError
from vae_cli.registry import Registry

#: name -> builder(cfg, data_dir) -> DataBundle
DATASETS: Registry = Registry("dataset")


@dataclass
class ImageSplit:
    """One split held in memory: uint8 images (N, C, H, W) in 0..255, optional labels and factors."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    factors: torch.Tensor | None = None  # ground-truth generative factors (synthetic data)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> ImageSplit:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return ImageSplit(self.images[index], pick(self.labels), pick(self.factors))


#: A split is either held in memory, or a map-style Dataset of uint8 (C, H, W) tensors read on demand.
Split = ImageSplit | Dataset


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    shape: tuple[int, int, int]  # (C, H, W)
    binarize: str = "none"
    factor_names: list[str] = field(default_factory=list)

    @property
    def num_dims(self) -> int:
        c, h, w = self.shape
        return c * h * w


def split_off(split: ImageSplit, size: int, seed: int, what: str) -> tuple[ImageSplit, ImageSplit]:
    """Carve `size` examples out of `split` with a fixed seed: returns (rest, carved)."""
    if size >= len(split):
        raise ConfigError(
            f"dataset.{what}_size={size} leaves no training data ({len(split)} examples): use a smaller value"
        )
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(perm[size:].sort().values), split.subset(perm[:size].sort().values)


def binarize_static(split: ImageSplit, seed: int) -> ImageSplit:
    """Binarise once: each pixel is a Bernoulli draw of its intensity, fixed for good (0 or 255)."""
    g = torch.Generator().manual_seed(seed)
    probs = split.images.float() / 255.0
    images = (torch.bernoulli(probs, generator=g) * 255).to(torch.uint8)
    return ImageSplit(images, split.labels, split.factors)


def finish_bundle(
    name: str, cfg: DatasetConfig, train: ImageSplit, test: ImageSplit, factor_names: list[str] | None = None
) -> DataBundle:
    """Carve validation from train with the data's fixed seed; binarise statically if asked."""
    seed = cfg.seed
    train, val = split_off(train, cfg.val_size, seed, "val")
    splits = [train, val, test]
    if cfg.binarize == "static":
        # A different stream per split, identical run after run.
        splits = [binarize_static(s, seed + 1000 + i) for i, s in enumerate(splits)]
    return DataBundle(
        name,
        *splits,
        shape=tuple(train.images.shape[1:]),
        binarize=cfg.binarize,
        factor_names=factor_names or [],
    )


def create_dataset(cfg: DatasetConfig, data_dir: str | Path) -> DataBundle:
    return DATASETS.get(cfg.name)(cfg, Path(data_dir).expanduser())
