"""Tiny datasets and inputs written in the real on-disk formats, and readers of the images the commands
write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vae_cli.data.mnist import write_idx

#: Tiny synthetic data that trains in about a second.
TINY_SYNTHETIC = [
    "dataset=synthetic",
    "dataset.size=240",
    "dataset.val_size=40",
    "dataset.test_size=40",
    "dataset.image_size=16",
    "model=conv",
    "model.channels=[8,16]",
    "latent_dim=4",
    "train.batch_size=32",
]

#: The tiny conv model that the checkpoint commands' tests and the Python API's share (the session's
#: `trained_run` in tests/conftest.py): its image size and latent_dim, and its `vae train` command line.
SIZE, LATENT = 16, 4
TINY_CONV_TRAIN = [
    "train",
    "dataset=synthetic",
    "dataset.size=300",
    "dataset.val_size=50",
    "dataset.test_size=50",
    f"dataset.image_size={SIZE}",
    "model=conv",
    "model.channels=[8,16]",
    f"latent_dim={LATENT}",
    "train.epochs=1",
    "train.batch_size=32",
    "train.image_every=0",
]

#: A tiny MLP on tiny synthetic data, for tests that call the training loop on a composed config.
TINY_TRAIN = [
    "dataset=synthetic",
    "dataset.size=300",
    "dataset.val_size=50",
    "dataset.test_size=50",
    "dataset.image_size=16",
    "model=mlp",
    "latent_dim=4",
    "train.epochs=1",
    "train.batch_size=32",
    "train.image_every=0",
    "train.num_workers=0",
    "device=cpu",
]

PAD = 2  # torchvision's make_grid padding


def make_idx_dataset(
    root: Path,
    folder: str = "MNIST",
    n_train: int = 120,
    n_test: int = 40,
    compress: bool = False,
    seed: int = 0,
) -> Path:
    """A tiny MNIST-format dataset in torchvision's layout <root>/<folder>/raw/: strokes on black."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"

    def images(n: int) -> np.ndarray:
        x = np.zeros((n, 28, 28), dtype=np.uint8)
        for i in range(n):
            r, c = rng.integers(4, 20, size=2)
            x[i, r : r + 8, c : c + 3] = rng.integers(128, 256)
        return x

    write_idx(raw / "train-images-idx3-ubyte", images(n_train), compress)
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train), compress)
    write_idx(raw / "t10k-images-idx3-ubyte", images(n_test), compress)
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), compress)
    return root


def make_celeba(root: Path, per_split: tuple[int, int, int] = (12, 4, 4)) -> Path:
    """A tiny CelebA in torchvision's layout: <root>/celeba/img_align_celeba/*.jpg (178x218) and
    list_eval_partition.txt."""
    rng = np.random.default_rng(0)
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    lines, index = [], 1
    for code, count in enumerate(per_split):
        for _ in range(count):
            name = f"{index:06d}.jpg"
            pixels = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name, quality=90)
            lines.append(f"{name} {code}")
            index += 1
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def write_inputs(folder: Path) -> Path:
    """Two readable images of other sizes and modes, and two files that are not images."""
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    rgb = (torch.rand(40, 70, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(rgb).save(folder / "wide.jpg")
    Image.fromarray(rgb[:, :30, 0]).convert("LA").save(folder / "grey.png")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def grid_size(rows: int, cols: int, size: int = SIZE, scale: int = 1) -> tuple[int, int]:
    """(width, height) of a torchvision grid of rows x cols images of size x size, upscaled `scale` times
    (the commands' default scale makes cells at least 64 px: 4 for 16-px images)."""
    return scale * (cols * (size + PAD) + PAD), scale * (rows * (size + PAD) + PAD)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def make_image_folder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """A tiny image folder: a/ and b/ (the labels) of JPEGs and PNGs of several sizes, and one broken
    PNG (skipped by the reader)."""
    rng = np.random.default_rng(seed)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(14 + i, 18, 3), dtype=np.uint8)
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(pixels).save(root / label / f"{i}.{suffix}")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root
