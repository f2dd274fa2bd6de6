"""The synthetic shapes (vae_cli/data/synthetic.py): reproducible, with their ground-truth factors."""

from __future__ import annotations

import pytest
import torch

from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset
from vae_cli.data.synthetic import FACTOR_NAMES, generate
from vae_cli.errors import ConfigError


def test_synthetic_is_reproducible_and_keeps_factors() -> None:
    a, b = generate(200, 32, seed=3), generate(200, 32, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert a.images.shape == (200, 1, 32, 32) and a.factors.shape == (200, len(FACTOR_NAMES))
    assert set(a.images.unique().tolist()) == {0, 255}
    assert (a.images.flatten(1).amax(1) == 255).all()  # every image shows its shape
    assert set(a.factors[:, 0].long().tolist()) == {0, 1, 2, 3}
    assert not torch.equal(a.images, generate(200, 32, seed=4).images)


def test_synthetic_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match="dataset.size"):
        create_dataset(DatasetConfig(name="synthetic", size=100, val_size=60, test_size=60), ".")
