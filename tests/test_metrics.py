"""Evaluation metrics (vae_cli/metrics.py) as pure functions, on data whose answer is known: bits/dim,
active units, the probe, the Mutual Information Gap, and the ranking metrics (ROC AUC, average
precision) of `vae score`."""

from __future__ import annotations

import math

import pytest
import torch

from vae_cli.metrics import (
    DCI_MIN_EXAMPLES,
    active_units,
    average_precision,
    bits_per_dim,
    dci,
    dci_scores,
    discrete_mutual_information,
    discretize,
    entropy,
    factor_codes,
    latent_variances,
    logistic_probe,
    mutual_information_gap,
    representation_metrics,
    roc_auc,
    split_dci,
)


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


# --- the Mutual Information Gap -----------------------------------------------------------------------


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


# --- DCI ---------------------------------------------------------------------------------------------

DCI_N = 1000  # enough for the forests, fast enough for the suite


def test_dci_scores_of_known_importance_matrices() -> None:
    assert dci_scores(torch.eye(4)[[2, 0, 3, 1]]) == pytest.approx((1.0, 1.0))  # a permutation
    assert dci_scores(torch.ones(4, 4)) == pytest.approx((0.0, 0.0), abs=1e-12)  # all serve all equally
    assert dci_scores(torch.zeros(3, 2)) == pytest.approx((0.0, 0.0), abs=1e-12)  # no information: uniform
    # Code 0 serves factors 0 and 1 equally (H = log 2 / log 4 = 1/2, weight 2/4); codes 1, 2 one each.
    split = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert dci_scores(split) == pytest.approx((1 - 0.5 * 0.5, 1.0))
    # Each factor in two codes equally: disentangled codes, each factor incomplete by log 2 / log 6.
    assert dci_scores(torch.cat([torch.eye(3), torch.eye(3)])) == pytest.approx(
        (1.0, 1 - math.log(2) / math.log(6))
    )
    h = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))  # one factor: the codes are disentangled, not complete
    assert dci_scores(torch.tensor([[0.3], [0.7]])) == pytest.approx((1.0, 1 - h / math.log(2)))


def test_dci_of_a_permutation_of_the_factors_is_one() -> None:
    g = torch.Generator().manual_seed(0)
    f = _factors(g)[:DCI_N]
    # Each factor in its own dimension (shuffled, rescaled, monotonic), plus two pure-noise dimensions.
    codes = torch.cat(
        [0.3 * f[:, [1]] + 5, torch.randn(DCI_N, 2, generator=g), f[:, [0]] ** 2, -f[:, [2]]], 1
    )
    result = dci(codes, f)
    assert result["disentanglement"] > 0.99 and result["completeness"] > 0.99
    assert result["informativeness"] == pytest.approx(1.0)


def test_dci_of_codes_that_mix_every_factor_equally_is_near_zero() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.cat([_factors(g)[:DCI_N], torch.randint(0, 5, (DCI_N, 1), generator=g).float()], 1)
    standardized = (f - f.mean(0)) / f.std(0)
    # An orthogonal mixing with entries +-1/2 (Hadamard): every code dimension holds every factor with
    # the same weight, and every factor needs all four dimensions to be read back.
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2
    mixed = dci(standardized @ hadamard, f)
    assert mixed["disentanglement"] < 0.02 and mixed["completeness"] < 0.02
    assert mixed["informativeness"] > 0.6  # the factors are still in the code, just not one per dimension
    noise = dci(torch.randn(DCI_N, 4, generator=g), f)
    assert noise["disentanglement"] < 0.02 and noise["informativeness"] < 0.4  # near chance


def test_dci_skips_constant_factors_and_needs_enough_codes() -> None:
    g = torch.Generator().manual_seed(3)
    f = torch.cat([torch.zeros(DCI_N, 1), _factors(g)[:DCI_N, :2]], 1)
    assert dci(f[:, [2, 1]].clone(), f)["disentanglement"] > 0.99  # the constant factor is left out
    assert all(math.isnan(v) for v in dci(torch.randn(10, 2), torch.zeros(10, 1)).values())
    diverged = torch.full((10, 2), math.nan)  # a model that diverged: NaN, not an error
    assert all(math.isnan(v) for v in dci(diverged, torch.arange(10.0)[:, None]).values())
    with pytest.raises(ValueError):
        dci(torch.randn(10, 2), torch.randn(9, 1))
    assert split_dci(torch.randn(DCI_MIN_EXAMPLES - 1, 2), f[: DCI_MIN_EXAMPLES - 1]) is None
    assert split_dci(f[:, 1:].clone(), None) is None
    metrics = representation_metrics(f[:, [2, 1]].clone(), f)
    assert metrics["dci_disentanglement"] > 0.99 and set(metrics) == {
        "active_units",
        "mig",
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness",
    }


# --- the ranking metrics -----------------------------------------------------------------------------


def test_roc_auc_and_average_precision_on_known_examples() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)  # P at R=0.5: 1; at R=1: 2/3
    assert roc_auc(torch.tensor([3.0, 2, 1]), torch.tensor([1, 0, 0])) == 1.0
    assert roc_auc(torch.tensor([1.0, 2, 3]), torch.tensor([1, 0, 0])) == 0.0
    assert average_precision(torch.tensor([3.0, 2, 1]), torch.tensor([0, 1, 0])) == pytest.approx(0.5)


def test_ties_count_half_and_enter_the_precision_together() -> None:
    labels = torch.tensor([1, 0, 1, 0])
    same = torch.ones(4)
    assert roc_auc(same, labels) == 0.5
    assert average_precision(same, labels) == 0.5  # one threshold: precision 2/4 at recall 1
    scores = torch.tensor([0.9, 0.8, 0.8, 0.3, 0.2, 0.2, 0.1])
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0])
    assert average_precision(scores, labels) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3 + 1 / 3 * 1 / 2)


def test_roc_auc_equals_the_pairwise_probability_on_random_data() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (300,), generator=g).double()  # many ties
    labels = torch.rand(300, generator=g) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert roc_auc(scores, labels) == pytest.approx(float(pairwise))
    assert roc_auc(-scores, labels) == pytest.approx(1 - float(pairwise))


def test_degenerate_labels_give_nan() -> None:
    assert math.isnan(roc_auc(torch.rand(5), torch.zeros(5)))
    assert math.isnan(roc_auc(torch.rand(5), torch.ones(5)))
    assert math.isnan(average_precision(torch.rand(5), torch.zeros(5)))
    assert average_precision(torch.rand(5), torch.ones(5)) == 1.0
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        roc_auc(torch.rand(3), torch.ones(2))
