"""Evaluation metrics (vae_cli/metrics.py) as pure functions, on data whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from vae_cli.metrics import active_units, bits_per_dim, latent_variances, logistic_probe


def test_bits_per_dim_is_nats_over_d_ln2() -> None:
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(0.0, 10) == 0.0


def test_active_units_counts_dimensions_whose_mean_moves_with_x() -> None:
    g = torch.Generator().manual_seed(0)
    n = 4000
    mu = torch.stack(
        [
            torch.randn(n, generator=g),  # variance 1: active
            0.2 * torch.randn(n, generator=g),  # variance 0.04: active
            0.05 * torch.randn(n, generator=g),  # variance 0.0025: inactive
            torch.full((n,), 3.0),  # constant, however far from 0: inactive
        ],
        dim=1,
    )
    torch.testing.assert_close(
        latent_variances(mu), torch.tensor([1.0, 0.04, 0.0025, 0.0], dtype=torch.float64), rtol=0.1, atol=1e-6
    )
    assert active_units(mu) == 2
    assert active_units(mu, threshold=0.001) == 3
    assert active_units(mu[:1]) == 0  # one example has no variance


def test_logistic_probe_reads_a_linearly_decodable_label() -> None:
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 5, generator=g)
    labels = torch.randint(3, (600,), generator=g)
    features = centres[labels] + torch.randn(600, 5, generator=g)
    accuracy = logistic_probe(features[:400], labels[:400], features[400:], labels[400:])
    assert accuracy > 0.95


def test_logistic_probe_is_at_chance_on_noise() -> None:
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2000, 4, generator=g)
    labels = torch.randint(4, (2000,), generator=g)
    accuracy = logistic_probe(features[:1000], labels[:1000], features[1000:], labels[1000:])
    assert 0.18 < accuracy < 0.32


def test_logistic_probe_accepts_inference_tensors() -> None:
    """The probe needs gradients, yet its features usually come from an inference-mode encoder pass."""
    with torch.inference_mode():
        features = torch.cat([torch.zeros(50, 2), torch.ones(50, 2)])
        labels = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    assert logistic_probe(features, labels, features, labels) == 1.0
