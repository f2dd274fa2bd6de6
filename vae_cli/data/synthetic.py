"""dSprites-like shapes generated from a seed: no download, the offline default for demos and tests.

Each image is one white shape on black, drawn from five ground-truth factors sampled independently on
dSprites' grids: shape (square, ellipse, heart, triangle), scale (6 values in [0.5, 1]), rotation (40
values in [0, 2 pi)), and x and y position (32 values each). The factors are kept with the images for
disentanglement metrics, and the shape is the label (square, ellipse, heart, triangle: 0 to 3), so
`dataset.exclude_classes=[heart]` and `vae score anomaly_class=heart` work.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from vae_cli.config import DatasetConfig
from vae_cli.data.base import DATASETS, DataBundle, ImageSplit, finish_bundle, split_off
from vae_cli.errors import ConfigError

SHAPES = ("square", "ellipse", "heart", "triangle")
FACTOR_NAMES = ["shape", "scale", "rotation", "pos_x", "pos_y"]
FACTOR_STEPS = {"scale": 6, "rotation": 40, "pos_x": 32, "pos_y": 32}


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.8) & (v.abs() <= 0.8)


def _ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u**2 + (v / 0.6) ** 2 <= 1.0


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # The heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled to fit the unit box.
    x, y = u * 1.2, -v * 1.2 + 0.2
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral, pointing up, centred on its centroid.
    s3 = math.sqrt(3.0)
    return (v <= 0.5) & (s3 * u - v <= 1.0) & (-s3 * u - v <= 1.0)


DRAW = (_square, _ellipse, _heart, _triangle)  # in the order of SHAPES


def render(factors: torch.Tensor, image_size: int) -> torch.Tensor:
    """Draw shapes from factor values (N, 5) = [shape index, scale, rotation, pos_x, pos_y] -> uint8 (N,1,S,S).

    A pixel is on when its centre lies inside the shape."""
    n, size = len(factors), image_size
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    shape, scale, rot, px, py = factors.T
    radius = 0.2 * scale.view(n, 1, 1)  # shape half-width as a fraction of the image
    # Shape-local coordinates: translate, rotate by -rot, scale to the unit box.
    dx = (x - (0.2 + 0.6 * px).view(n, 1, 1)) / radius
    dy = (y - (0.2 + 0.6 * py).view(n, 1, 1)) / radius
    cos, sin = torch.cos(rot).view(n, 1, 1), torch.sin(rot).view(n, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for index, draw in enumerate(DRAW):
        pick = shape == index
        images[pick, 0] = draw(u[pick], v[pick]).to(torch.uint8) * 255
    return images


def sample_factors(n: int, generator: torch.Generator) -> torch.Tensor:
    shape = torch.randint(len(SHAPES), (n,), generator=generator).float()
    cols = [shape]
    lows_highs = {
        "scale": (0.5, 1.0),
        "rotation": (0.0, 2 * math.pi),
        "pos_x": (0.0, 1.0),
        "pos_y": (0.0, 1.0),
    }
    for name, steps in FACTOR_STEPS.items():
        lo, hi = lows_highs[name]
        idx = torch.randint(steps, (n,), generator=generator).float()
        step = (hi - lo) / (steps if name == "rotation" else steps - 1)  # rotation wraps around
        cols.append(lo + idx * step)
    return torch.stack(cols, dim=1)


def generate(n: int, image_size: int, seed: int, chunk: int = 500) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    factors = sample_factors(n, g)
    images = torch.cat([render(factors[i : i + chunk], image_size) for i in range(0, n, chunk)])
    return ImageSplit(images, labels=factors[:, 0].long(), factors=factors)


@DATASETS.register("synthetic")
def synthetic(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    if cfg.channels != 1:
        raise ConfigError("dataset=synthetic draws 1-channel shapes: remove the dataset.channels override")
    if cfg.image_size < 8:
        raise ConfigError(f"dataset.image_size={cfg.image_size} is too small for shapes: use 16 or more")
    if cfg.size <= cfg.val_size + cfg.test_size:
        raise ConfigError(
            f"dataset.size={cfg.size} must exceed dataset.val_size + dataset.test_size "
            f"({cfg.val_size} + {cfg.test_size}): raise dataset.size or lower the others"
        )
    everything = generate(cfg.size, cfg.image_size, cfg.seed)
    train, test = split_off(everything, cfg.test_size, cfg.seed + 1, "test")
    return finish_bundle("synthetic", cfg, train, test, factor_names=FACTOR_NAMES, label_names=list(SHAPES))
