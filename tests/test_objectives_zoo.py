"""The disentangling objectives (vae_cli/objectives.py): beta-TCVAE's split of the KL and its batch
estimators against a brute-force double loop, DIP-VAE's covariance penalties against numpy, the capacity
schedule, the MMD against a double loop; a few steps of `vae train` with each, whose own terms reach
TensorBoard and metrics.json through the meter; `vae evaluate` on an MMD model; and the combinations
they refuse, each in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.distributions import Normal

import vae_cli.training.loop
from tests.helpers.cli import vae
from tests.helpers.data import TINY_TRAIN
from vae_cli.cli import compose_config
from vae_cli.config import LossConfig, ModelConfig, PosteriorConfig, validate_train_config
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.models.posteriors import gaussian_kl
from vae_cli.objectives import (
    OBJECTIVES,
    Terms,
    capacity_at,
    dip_covariance,
    dip_penalties,
    elbo_terms,
    kernel_matrix,
    mmd_u,
    tc_decomposition,
)
from vae_cli.training.distributed import Dist
from vae_cli.training.meter import IntervalMeter

#: each new objective with small settings, and the terms it reports
ZOO = {
    "btcvae": (["objective.beta=3"], {"mi", "tc", "dim_kl"}),
    "dip": (["objective.variant=ii"], {"dip_offdiag", "dip_diag"}),
    "capacity": (["objective.capacity=2", "objective.gamma=10"], {"capacity"}),
    "mmd": (["objective.kernel=rbf", "objective.lambda_mmd=10"], {"mmd"}),
}


def tiny_model(seed: int = 0, posterior: str = "gaussian"):
    torch.manual_seed(seed)
    lik = create_likelihood(LossConfig(name="bernoulli"))
    post = PosteriorConfig(name=posterior, steps=1, hidden=8) if posterior == "iaf" else None
    return create_model(ModelConfig(name="mlp", hidden_dims=[16]), (1, 4, 4), 3, lik, posterior=post)


def objective_cfg(name: str, **keys):
    """The objective's schema with its defaults (as vae train hands it over), `keys` set."""
    from vae_cli.config.fields import OPTIONS

    return OPTIONS["objective"][name](**keys)


def binary_batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed)).float()


# --- beta-TCVAE --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_the_batch_estimates_of_q_z_match_a_brute_force_double_loop(estimator: str) -> None:
    m, d, n = 4, 3, 10
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(m, d, generator=g), 0.5 * torch.randn(m, d, generator=g)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(m, d, generator=g)
    mi, tc, dim_kl = tc_decomposition(z, mu, logvar, n, estimator)
    std = torch.exp(0.5 * logvar)
    for i in range(m):
        q_z, q_marginal = 0.0, torch.zeros(d)
        for k in range(m):
            own, other = (
                (1 / (n * m), 1 / (n * m)) if estimator == "mws" else (1 / n, (n - 1) / (n * (m - 1)))
            )
            w = own if k == i else other
            per_dim = Normal(mu[k], std[k]).log_prob(z[i]).exp()
            q_z += w * per_dim.prod()
            q_marginal += w * per_dim
        log_q_zx = Normal(mu[i], std[i]).log_prob(z[i]).sum()
        log_p = Normal(0.0, 1.0).log_prob(z[i])
        assert mi[i] == pytest.approx(float(log_q_zx - math.log(q_z)), abs=1e-4)
        assert tc[i] == pytest.approx(float(math.log(q_z) - q_marginal.log().sum()), abs=1e-4)
        assert dim_kl[i] == pytest.approx(float((q_marginal.log() - log_p).sum()), abs=1e-4)


def test_a_factorised_posterior_has_no_mi_and_no_tc_and_mws_reads_off_by_log_n() -> None:
    """q(z|x) = N(0, I) for every x: q(z) = N(0, I), so MI = TC = dimKL = 0; the stratified estimate is
    exact, the published minibatch-weighted one is shifted by multiples of log N (same sum)."""
    m, d, n = 64, 4, 1000
    z, zeros = torch.randn(m, d, generator=torch.Generator().manual_seed(1)), torch.zeros(m, d)
    for value in tc_decomposition(z, zeros, zeros, n, "mss"):
        torch.testing.assert_close(value, torch.zeros(m), atol=1e-4, rtol=0)
    mi, tc, dim_kl = tc_decomposition(z, zeros, zeros, n, "mws")
    for value, offset in ((mi, 1), (tc, d - 1), (dim_kl, -d)):
        torch.testing.assert_close(value, torch.full((m,), offset * math.log(n)), atol=1e-4, rtol=0)


def test_the_three_terms_sum_to_the_kl_in_expectation() -> None:
    """On a closed-form case (fixed Gaussian posteriors), MI + TC + dimKL averaged over draws is the
    closed-form KL to N(0, I): they sum to log q(z|x) - log p(z) on each draw."""
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(8, 3, generator=g), 0.3 * torch.randn(8, 3, generator=g)
    sums = []
    for _ in range(500):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(8, 3, generator=g)
        sums.append(sum(tc_decomposition(z, mu, logvar, 100)))
    estimate = torch.stack(sums).mean()
    assert float(estimate) == pytest.approx(float(gaussian_kl(mu, logvar).sum(1).mean()), abs=0.05)


def call(name: str, model, x: torch.Tensor, cfg, beta: float = 1.0, seed: int = 3, step: int | None = None):
    return OBJECTIVES.get(name)(model, x, cfg, beta, generator=torch.Generator().manual_seed(seed), step=step)


def test_btcvae_with_unit_weights_is_the_elbo_and_beta_weighs_the_tc() -> None:
    model, x = tiny_model(), binary_batch(16)
    elbo = elbo_terms(model, x, generator=torch.Generator().manual_seed(3))
    ones = call("btcvae", model, x, objective_cfg("btcvae", beta=1.0, dataset_size=100))
    torch.testing.assert_close(ones.loss(1.0), elbo.loss(1.0))
    assert {"mi", "tc", "dim_kl"} == set(ones.extras)
    weighted = call("btcvae", model, x, objective_cfg("btcvae", beta=3.0, dataset_size=100))
    expected = elbo.loss(2.0) + 2.0 * 2 * weighted.extras["tc"]  # beta = 2 scales the whole regulariser
    torch.testing.assert_close(weighted.loss(2.0), expected, rtol=1e-4, atol=1e-4)


# --- DIP-VAE -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["i", "ii"])
def test_dip_covariance_and_penalties_match_numpy(variant: str) -> None:
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(7, 3)), 0.5 * rng.normal(size=(7, 3))
    expected = np.cov(mu, rowvar=False, bias=True)
    if variant == "ii":
        expected = expected + np.diag(np.exp(logvar).mean(0))
    cov = dip_covariance(torch.tensor(mu), torch.tensor(logvar), variant)
    np.testing.assert_allclose(cov.numpy(), expected, rtol=1e-5, atol=1e-6)
    off, diag = dip_penalties(cov)
    assert float(off) == pytest.approx((expected**2).sum() - (np.diag(expected) ** 2).sum(), rel=1e-5)
    assert float(diag) == pytest.approx(((np.diag(expected) - 1) ** 2).sum(), rel=1e-5)


@pytest.mark.parametrize(("variant", "factor"), [("i", 10.0), ("ii", 1.0)])
def test_dip_adds_the_weighted_penalty_to_the_elbo(variant: str, factor: float) -> None:
    model, x = tiny_model(), binary_batch(12)
    elbo = elbo_terms(model, x, generator=torch.Generator().manual_seed(3))
    terms = call("dip", model, x, objective_cfg("dip", variant=variant, lambda_od=2.0))
    off, diag = terms.extras["dip_offdiag"], terms.extras["dip_diag"]
    expected = elbo.loss(1.0) + 2.0 * off + 2.0 * factor * diag  # lambda_d null: the paper's default
    torch.testing.assert_close(terms.loss(1.0), expected)
    explicit = call("dip", model, x, objective_cfg("dip", variant=variant, lambda_od=2.0, lambda_d=0.5))
    torch.testing.assert_close(explicit.loss(1.0), elbo.loss(1.0) + 2.0 * off + 0.5 * diag)


# --- capacity ----------------------------------------------------------------------------------------------


def test_the_capacity_grows_linearly_and_the_loss_holds_the_kl_near_it() -> None:
    assert [capacity_at(s, 25.0, 100) for s in (0, 50, 100, 400)] == [0.0, 12.5, 25.0, 25.0]
    assert capacity_at(None, 25.0, 100) == capacity_at(7, 25.0, 0) == 25.0  # evaluation; no annealing
    model, x = tiny_model(), binary_batch(12)
    cfg = objective_cfg("capacity", capacity=4.0, capacity_steps=10, gamma=100.0)
    terms = call("capacity", model, x, cfg, beta=1.0, step=5)
    assert terms.extras["capacity"] == 2.0
    expected = terms.recon.mean() + 100.0 * (terms.kl.mean() - 2.0).abs()
    torch.testing.assert_close(terms.loss(1.0), expected)
    assert call("capacity", model, x, cfg).extras["capacity"] == 4.0  # no step: the schedule's end


# --- MMD ---------------------------------------------------------------------------------------------------


def brute_force_mmd(x: torch.Tensor, y: torch.Tensor, kernel: str, scale: float) -> float:
    c = 2 * x.shape[1] * scale

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        sq = float(((a - b) ** 2).sum())
        return c / (c + sq) if kernel == "imq" else math.exp(-sq / c)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_matches_a_double_loop_and_tells_shifted_distributions_apart(kernel: str) -> None:
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g).double()
    assert float(mmd_u(x, y, kernel, 0.7)) == pytest.approx(brute_force_mmd(x, y, kernel, 0.7), rel=1e-9)
    c = 2 * 2 * 0.7  # the scale from the latent dimension, C = 2 d sigma^2
    k = float(kernel_matrix(x[:1], y[:1], kernel, 0.7)[0, 0])
    sq = float(((x[0] - y[0]) ** 2).sum())
    assert k == pytest.approx(c / (c + sq) if kernel == "imq" else math.exp(-sq / c))
    a, b = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    same, shifted = float(mmd_u(a, b, kernel, 1.0)), float(mmd_u(a, b + 1.0, kernel, 1.0))
    assert abs(same) < 0.01 < 0.05 < shifted


def test_mmd_draws_from_the_prior_with_the_generator_and_weighs_the_kl_by_one_minus_alpha() -> None:
    model, x = tiny_model(), binary_batch(12)
    wae = call("mmd", model, x, objective_cfg("mmd", lambda_mmd=10.0))
    again = call("mmd", model, x, objective_cfg("mmd", lambda_mmd=10.0))
    torch.testing.assert_close(wae.loss(1.0), again.loss(1.0))  # seeded: the same prior draws
    torch.testing.assert_close(wae.loss(1.0), wae.recon.mean() + 10.0 * wae.extras["mmd"])
    info = call("mmd", model, x, objective_cfg("mmd", lambda_mmd=10.0, alpha=0.25))
    expected = info.recon.mean() + 0.75 * info.kl.mean() + 10.0 * info.extras["mmd"]
    torch.testing.assert_close(info.loss(1.0), expected)
    one = call("mmd", model, x[:1], objective_cfg("mmd"))
    assert float(one.extras["mmd"]) == 0.0  # a batch of one has no pairs


# --- the loss, the meter, the refusals ----------------------------------------------------------------------


def test_a_regulariser_replaces_beta_kl_and_is_trimmed_with_its_examples() -> None:
    recon = torch.tensor([1.0, 2.0, 3.0, 100.0])
    kl = torch.tensor([5.0, 5.0, 5.0, 5.0])
    terms = Terms(recon, kl, None, regulariser=torch.tensor([0.5, 0.5, 0.5, 0.5]), extras={"mmd": 0.1})
    assert float(terms.loss(4.0)) == pytest.approx(26.5 + 0.5)  # beta * KL is not added
    assert float(terms.loss(4.0, trim=0.25)) == pytest.approx(2.0 + 0.5)  # the outlier left out


def test_the_meter_averages_an_objectives_terms_per_interval_weighted_by_examples() -> None:
    meter = IntervalMeter([0.0, 0.0, 0.0, 0.0], torch.device("cpu"), Dist())
    one, yes = torch.tensor(1.0), torch.tensor(True)
    meter.record(one, one, one, 2, yes, 0, {"tc": torch.tensor(1.0), "capacity": 0.5})
    meter.record(one, one, one, 6, yes, 1, {"tc": torch.tensor(3.0), "capacity": 1.5})
    interval = meter.close(False)
    assert interval.extras == pytest.approx({"tc": 2.5, "capacity": 1.25})
    meter.record(one, one, one, 4, yes, 2)  # the ELBO: no extras
    assert meter.close(False).extras == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=btcvae", "posterior=iaf"], "objective=btcvae estimates q(z)"),
        (["objective=btcvae", "prior=mog"], "it needs posterior=gaussian prior=standard"),
        (["objective=dip", "posterior=iaf"], "this run has posterior=iaf"),
        (["objective=capacity", "train.free_bits=0.1"], "which objective=capacity replaces"),
        (["objective=mmd", "objective.alpha=1.5"], "objective.alpha=1.5 is invalid: must be in [0, 1]"),
    ],
)
def test_the_combinations_an_objective_cannot_serve_stop_with_one_line(overrides, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_train_config(compose_config([*TINY_TRAIN, *overrides]))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_model_without_the_estimators_inputs_is_refused_at_the_first_step() -> None:
    """What the config check cannot see by name (a ladder's prior and posterior), the objective refuses."""
    model, x = tiny_model(posterior="iaf"), binary_batch(4)
    with pytest.raises(ConfigError, match="objective=btcvae needs the Gaussian posterior"):
        call("btcvae", model, x, objective_cfg("btcvae", dataset_size=10))
    with pytest.raises(ConfigError, match="objective=dip needs the Gaussian posterior"):
        call("dip", model, x, objective_cfg("dip"))


# --- end to end: a few steps of vae train each; vae evaluate on an MMD model -------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("zoo")
    trained = {}
    for name, (options, _) in ZOO.items():
        overrides = [*TINY_TRAIN, "model.hidden_dims=[32]", "train.log_every=2", f"objective={name}"]
        cfg = compose_config([*overrides, *options])
        trained[name] = (root / name, vae_cli.training.loop.train(cfg, root / name))
    return trained


@pytest.mark.parametrize("name", ZOO)
def test_each_objective_trains_and_its_terms_reach_tensorboard_and_metrics(runs, name: str) -> None:
    run, metrics = runs[name]
    extras = ZOO[name][1]
    for split in ("val", "test"):
        assert extras <= set(metrics[split]) and all(math.isfinite(metrics[split][k]) for k in extras)
    assert json.loads((run / "metrics.json").read_text())["val"].keys() == metrics["val"].keys()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {f"train/{k}" for k in extras} | {f"val/{k}" for k in extras} <= scalars
    assert len(events.Scalars(f"train/{sorted(extras)[0]}")) == math.ceil(metrics["steps"] / 2)


def test_the_data_sets_beta_tcvaes_dataset_size_and_the_capacitys_schedule(runs) -> None:
    btcvae, capacity = runs["btcvae"][1], runs["capacity"][1]
    assert btcvae["automatic"]["objective.dataset_size"] == 200  # the training split (300 - 50 - 50)
    assert capacity["automatic"]["objective.capacity_steps"] == capacity["steps"] == 7  # the whole run
    events = EventAccumulator(str(runs["capacity"][0] / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    c = [s.value for s in events.Scalars("train/capacity")]
    assert c == sorted(c) and 0 < c[0] < c[-1] <= 2.0  # C grows over the run, to objective.capacity


def test_evaluate_says_an_mmd_models_numbers_compare_with_nothing(runs, tmp_path: Path) -> None:
    run = runs["mmd"][0]
    result = vae(
        ["evaluate", f"ckpt={run}", "iwae_k=2", "probe=false", "pca=false", f"out={tmp_path}/e"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "e" / "metrics_test.json").read_text())
    assert metrics["comparable"] == [] and metrics["bound"].startswith("objective=mmd trained")
    assert "not a bound on log p(x)" in metrics["bound"]
