"""Shared fixtures: tiny datasets written in the real on-disk formats, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_cli.data.mnist import write_idx

REPO = Path(__file__).resolve().parent.parent

#: Tiny synthetic data that trains in about a second.
TINY_SYNTHETIC = [
    "dataset=synthetic",
    "dataset.size=240",
    "dataset.val_size=40",
    "dataset.test_size=40",
    "dataset.image_size=16",
    "model.channels=[8,16]",
    "latent_dim=4",
    "train.batch_size=32",
]


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


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("celeba"))


def run_vae(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m vae_cli ...`) in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "vae_cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run_dir(cwd: Path, command: str = "train") -> Path:
    runs = sorted(p for p in (cwd / "outputs" / command).glob("*/*") if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]
