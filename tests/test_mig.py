"""The Mutual Information Gap (vae_cli/metrics.py) on codes whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from vae_cli.metrics import (
    discrete_mutual_information,
    discretize,
    entropy,
    factor_codes,
    mutual_information_gap,
)

N = 10000


def _factors(generator: torch.Generator) -> torch.Tensor:
    """Three independent discrete factors with 4, 10 and 6 values, like synthetic's shape, pos, scale."""
    return torch.stack(
        [
            torch.randint(0, 4, (N,), generator=generator),
            torch.randint(0, 10, (N,), generator=generator),
            torch.randint(0, 6, (N,), generator=generator),
        ],
        dim=1,
    ).float()


def test_perfectly_disentangled_codes_score_near_one() -> None:
    g = torch.Generator().manual_seed(0)
    f = _factors(g)
    # Each factor in its own dimension (shuffled, rescaled, monotonic), plus two pure-noise dimensions.
    codes = torch.cat([0.3 * f[:, [1]] + 5, torch.randn(N, 2, generator=g), f[:, [0]] ** 2, -f[:, [2]]], 1)
    assert mutual_information_gap(codes, f) > 0.98


def test_entangled_codes_score_near_zero() -> None:
    g = torch.Generator().manual_seed(1)
    f = _factors(g)
    standardized = (f - f.mean(0)) / f.std(0)
    mixing = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]) / math.sqrt(3)
    assert mutual_information_gap(standardized @ mixing, f) < 0.05  # every dimension mixes every factor


def test_redundant_and_uninformative_codes_score_zero() -> None:
    g = torch.Generator().manual_seed(2)
    f = _factors(g)
    assert mutual_information_gap(torch.cat([f, f], 1), f) == pytest.approx(
        0.0, abs=1e-9
    )  # each factor twice
    assert mutual_information_gap(torch.randn(N, 5, generator=g), f) < 0.02  # codes that ignore the data


def test_mutual_information_and_entropy_of_known_distributions() -> None:
    labels = torch.arange(8).repeat(100)
    assert entropy(labels) == pytest.approx(math.log(8))
    assert discrete_mutual_information(labels, labels) == pytest.approx(math.log(8))
    assert discrete_mutual_information(labels, labels % 2) == pytest.approx(math.log(2))  # one bit shared
    independent = torch.arange(8).repeat_interleave(8).repeat(10), torch.arange(8).repeat(80)
    assert discrete_mutual_information(*independent) == pytest.approx(0.0, abs=1e-12)


def test_discretisation_keeps_discrete_factors_and_bins_continuous_ones() -> None:
    x = torch.linspace(0, 1, 1000)[:, None]
    bins = discretize(x, 20)
    assert bins.min() == 0 and bins.max() == 19 and len(bins.unique()) == 20
    assert (discretize(torch.full((10, 1), 3.0), 20) == 0).all()  # a constant column: one bin
    factors = torch.stack([torch.tensor([0.5, 1.5, 0.5, 2.5] * 25), torch.linspace(0, 1, 100)], 1)
    classes = factor_codes(factors, bins=20)
    assert classes[:, 0].unique().tolist() == [0, 1, 2]  # 3 distinct values: 3 classes
    assert len(classes[:, 1].unique()) == 20  # 100 distinct values: 20 bins


def test_constant_factors_are_skipped_and_bad_shapes_refused() -> None:
    g = torch.Generator().manual_seed(3)
    f = torch.cat([_factors(g)[:, :1], torch.zeros(N, 1)], 1)
    assert mutual_information_gap(f[:, :1].clone(), f) == pytest.approx(1.0, abs=0.01)
    assert math.isnan(mutual_information_gap(torch.randn(10, 2), torch.zeros(10, 1)))
    with pytest.raises(ValueError):
        mutual_information_gap(torch.randn(10, 2), torch.randn(9, 1))
