"""FactorVAE (objective=factor, vae_cli/total_correlation.py) and the plain autoencoder (objective=ae).

factor: the density-ratio estimate of the total correlation against the closed form of correlated
Gaussians (a discriminator fixed to the true log ratio, and one trained by the real step); the
permutation of dimensions; the gradient average over ranks; a few steps of training through the compose
API; an exact resume, discriminator and its optimiser included.
ae: its deterministic terms; a few steps of training (and denoising); `vae sample` from the Gaussian fitted
to its training codes; `vae evaluate` saying which numbers do not apply; the combinations refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.distributions import MultivariateNormal, Normal

import vae_cli.training.loop
from tests.helpers.cli import ok, only_run_dir, vae
from tests.helpers.data import TINY_TRAIN
from vae_cli.checkpoint import load_checkpoint
from vae_cli.cli import compose_config
from vae_cli.code_mixture import CodeMixture
from vae_cli.config import LossConfig, ModelConfig, validate_train_config
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.objectives import OBJECTIVES, draws_no_codes, elbo_terms
from vae_cli.total_correlation import (
    Discriminator,
    TCDiscriminator,
    discriminator_loss,
    permute_dims,
)
from vae_cli.training.distributed import Dist

#: a small discriminator, for the tests' speed
SMALL = ["objective=factor", "objective.hidden=16", "objective.layers=2"]
RHO = 0.8


def correlated(rho: float) -> MultivariateNormal:
    return MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, rho], [rho, 1.0]]))


def true_log_ratio(z: torch.Tensor, rho: float) -> torch.Tensor:
    """log q(z) - log prod_j q(z_j) for q = N(0, [[1, rho], [rho, 1]]), whose marginals are N(0, 1)."""
    return correlated(rho).log_prob(z) - Normal(0.0, 1.0).log_prob(z).sum(-1)


def closed_form_tc(rho: float) -> float:
    """KL(N(0, Sigma) || N(0, diag Sigma)) = -1/2 log det of the correlation matrix = -1/2 log(1 - rho^2)."""
    return -0.5 * math.log(1 - rho**2)


def tiny_model(latent_dim: int = 2):
    torch.manual_seed(0)
    likelihood = create_likelihood(LossConfig(name="bernoulli"))
    return create_model(ModelConfig(name="mlp", hidden_dims=[16]), (1, 4, 4), latent_dim, likelihood)


class TrueRatio:
    """A discriminator fixed to the true log density ratio of the correlated Gaussian."""

    def log_ratio(self, z: torch.Tensor) -> torch.Tensor:
        return true_log_ratio(z, RHO)


# --- factor: the maths ----------------------------------------------------------------------------------


def test_the_density_ratio_at_the_true_log_ratio_is_the_closed_form_tc() -> None:
    torch.manual_seed(0)
    z = correlated(RHO).sample((50_000,))
    # the batch mean of the logit l(z) = log D/(1 - D) at D's optimum is the TC, in nats
    assert TrueRatio().log_ratio(z).mean().item() == pytest.approx(closed_form_tc(RHO), abs=0.02)
    independent = MultivariateNormal(torch.zeros(2), torch.eye(2)).sample((1000,))
    torch.testing.assert_close(true_log_ratio(independent, 0.0), torch.zeros(1000), atol=1e-5, rtol=0)
    # ... and the discriminator's cross-entropy is lowest there (the Bayes-optimal classifier)
    permuted = permute_dims(z)
    best = discriminator_loss(true_log_ratio(z, RHO), true_log_ratio(permuted, RHO))
    for scale in (0.5, 1.5):
        worse = discriminator_loss(scale * true_log_ratio(z, RHO), scale * true_log_ratio(permuted, RHO))
        assert worse > best


def test_the_factor_objective_adds_gamma_times_the_discriminators_logit_to_the_elbo() -> None:
    model, x = tiny_model(), torch.randint(0, 2, (6, 1, 4, 4)).float()
    cfg = SimpleNamespace(gamma=7.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    terms = OBJECTIVES.get("factor")(model, x, cfg, 2.0, generator=g1, companion=TrueRatio())
    plain = elbo_terms(model, x, generator=g2)
    z = model(x, torch.Generator().manual_seed(3)).z
    torch.testing.assert_close(terms.codes, z)
    torch.testing.assert_close(terms.penalty, 7.0 * true_log_ratio(z, RHO))
    torch.testing.assert_close(terms.loss(2.0), plain.loss(2.0) + 7.0 * true_log_ratio(z, RHO).mean())
    with pytest.raises(ValueError, match="companion"):
        OBJECTIVES.get("factor")(model, x, cfg, 1.0)


def test_a_trained_discriminator_estimates_the_tc_of_correlated_gaussians() -> None:
    torch.manual_seed(0)
    cfg = SimpleNamespace(hidden=32, layers=2, lr=1e-2)
    discriminator = TCDiscriminator(cfg, 2, torch.device("cpu"), Dist(), seed=0)
    q = correlated(RHO)
    for _ in range(100):
        logged = discriminator.step(q.sample((512,)))
    with torch.no_grad():
        estimate = discriminator.log_ratio(q.sample((20_000,))).mean().item()
    assert estimate == pytest.approx(closed_form_tc(RHO), abs=0.1)  # 0.51 nats
    assert 0.5 < float(logged["disc_accuracy"]) < 0.8  # the classes overlap: no perfect classifier


def test_permute_dims_shuffles_each_dimension_on_its_own() -> None:
    torch.manual_seed(0)
    z = correlated(0.9).sample((5000,))
    permuted = permute_dims(z, torch.Generator().manual_seed(1))
    for j in range(2):  # each column keeps its values: the marginals are untouched
        torch.testing.assert_close(permuted[:, j].sort().values, z[:, j].sort().values)
    assert not torch.equal(permuted[:, 0], z[:, 0]) and not torch.equal(permuted[:, 1], z[:, 1])
    assert torch.corrcoef(z.T)[0, 1] > 0.85 and abs(torch.corrcoef(permuted.T)[0, 1]) < 0.05
    torch.testing.assert_close(permuted, permute_dims(z, torch.Generator().manual_seed(1)))  # seeded


def test_the_discriminators_gradients_are_averaged_over_the_ranks() -> None:
    class TwoSameRanks(Dist):
        """Two ranks with the same gradients: the all-reduced sum is twice each."""

        def sum(self, t: torch.Tensor) -> torch.Tensor:
            return t.mul_(2)

    cfg = SimpleNamespace(hidden=8, layers=2, lr=1e-3)
    one, two = (TCDiscriminator(cfg, 3, torch.device("cpu"), d, seed=4) for d in (Dist(), TwoSameRanks(0, 2)))
    for name, value in one.net.state_dict().items():  # seeded alike, whatever the rank
        torch.testing.assert_close(value, two.net.state_dict()[name])
    z = torch.randn(16, 3)
    torch.manual_seed(5)
    one.step(z)
    torch.manual_seed(5)
    two.step(z)
    for a, b in zip(one.net.parameters(), two.net.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
        torch.testing.assert_close(a, b)


def test_the_discriminator_is_an_mlp_of_the_configured_size() -> None:
    net = Discriminator(4, hidden=10, layers=3)
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(4, 10), (10, 10), (10, 10), (10, 1)]
    assert net(torch.zeros(5, 4)).shape == (5,)


# --- factor: training and resuming ----------------------------------------------------------------------


def test_factor_trains_and_checkpoints_its_discriminator(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_TRAIN, *SMALL, "train.log_every=2"])
    metrics = vae_cli.training.loop.train(cfg, tmp_path)
    for split in ("train", "val", "test"):
        assert all(math.isfinite(metrics[split][k]) for k in ("loss", "recon", "kl")), split
    assert math.isfinite(metrics["val"]["tc"]) and math.isfinite(metrics["test"]["tc"])
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/tc", "train/disc_accuracy", "train/disc_loss", "val/tc"} <= set(events.Tags()["scalars"])
    accuracy = [e.value for e in events.Scalars("train/disc_accuracy")]
    assert len(accuracy) >= 2 and all(0 <= a <= 1 for a in accuracy)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    state = ckpt["companion"]
    assert set(state) == {"discriminator", "optimizer"} and state["optimizer"]["state"]
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.9)
    assert state["optimizer"]["state"][0]["step"] == metrics["steps"]  # one step per training step


def test_factor_resumes_exactly_with_its_discriminator(tmp_path: Path) -> None:
    common = [*TINY_TRAIN, *SMALL, "train.batch_size=64"]
    straight = vae_cli.training.loop.train(compose_config([*common, "train.epochs=2"]), tmp_path / "straight")
    vae_cli.training.loop.train(compose_config([*common, "train.epochs=1"]), tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed_cfg = compose_config([*common, "train.epochs=2", f"train.resume={last}"])
    resumed = vae_cli.training.loop.train(resumed_cfg, tmp_path / "resumed")
    assert resumed["steps"] == straight["steps"]
    for split in ("train", "val", "test"):
        for key in ("loss", "recon", "kl"):
            assert resumed[split][key] == pytest.approx(straight[split][key], rel=1e-6, abs=1e-6), (
                split,
                key,
            )
    a, b = (
        load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("straight", "resumed")
    )
    for name, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][name])
    for name, value in a["companion"]["discriminator"].items():
        torch.testing.assert_close(value, b["companion"]["discriminator"][name])
    moments = (
        a["companion"]["optimizer"]["state"][0]["exp_avg"],
        b["companion"]["optimizer"]["state"][0]["exp_avg"],
    )
    torch.testing.assert_close(*moments)
    # a discriminator of another size cannot continue: one line, not a traceback
    other = compose_config([*common, "objective.hidden=8", "train.epochs=2", f"train.resume={last}"])
    with pytest.raises(ConfigError, match="own model there does not fit this one"):
        vae_cli.training.loop.train(other, tmp_path / "other")


# --- ae -------------------------------------------------------------------------------------------------


def test_ae_terms_are_the_reconstruction_at_the_mean_code() -> None:
    model, x = tiny_model(3), torch.randint(0, 2, (5, 1, 4, 4)).float()
    terms = OBJECTIVES.get("ae")(model, x, None, 4.0, generator=torch.Generator().manual_seed(0))
    again = OBJECTIVES.get("ae")(model, x, None, 4.0, generator=torch.Generator().manual_seed(1))
    expected = model.likelihood.nll(model.decode(model.code(x)), x)
    torch.testing.assert_close(terms.recon, expected)
    torch.testing.assert_close(again.recon, expected)  # no draw: the seed changes nothing
    assert torch.equal(terms.kl, torch.zeros(5)) and terms.kl_per_dim is None
    torch.testing.assert_close(terms.loss(4.0), expected.mean())  # beta multiplies nothing


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("ae") / "run"
    cfg = compose_config([*TINY_TRAIN, "objective=ae", "train.image_every=1"])
    metrics = vae_cli.training.loop.train(cfg, run)
    return run, metrics


def test_ae_and_the_denoising_ae_train(ae_run, tmp_path: Path) -> None:
    run, metrics = ae_run
    for split in ("train", "val", "test"):
        assert metrics[split]["kl"] == 0 and metrics[split]["loss"] == pytest.approx(metrics[split]["recon"])
    assert draws_no_codes(load_checkpoint(run / "checkpoints" / "best.ckpt")["config"])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == ["val/reconstructions"]  # no prior, so no prior samples
    noisy = ["objective=ae", "train.denoise=gaussian", "train.noise_level=0.3"]
    denoising = vae_cli.training.loop.train(compose_config([*TINY_TRAIN, *noisy]), tmp_path)
    assert math.isfinite(denoising["test"]["recon"]) and denoising["test"]["kl"] == 0


def test_sampling_an_ae_draws_from_the_gaussian_fitted_to_its_training_codes(ae_run, tmp_path: Path) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data
    from vae_cli.estimators import encode_split

    run, _ = ae_run
    result = vae(["sample", f"ckpt={run}", "n=6", "seed=3", "save_tensor=true"], tmp_path)
    ok({"r": result}, "r")
    assert "objective=ae has no prior" in result.stderr and "fitted a diagonal Gaussian" in result.stderr
    images = torch.load(only_run_dir(tmp_path, "sample") / "samples.pt", weights_only=True)
    trained = read_checkpoint(run, "cpu")
    kept = CodeMixture.from_payload(torch.load(run / "code_gaussian.pt", weights_only=True))
    codes = encode_split(trained.model, load_data(trained, None).train, "none", 0).double()
    torch.testing.assert_close(kept.means[0], codes.mean(0))
    torch.testing.assert_close(kept.covariances[0], torch.diag(codes.var(0, correction=0)))
    generator = trained.generator(3)  # as CodeMixture.sample draws: the component (only one), then eps
    torch.multinomial(kept.weights.float(), 6, replacement=True, generator=generator)
    eps = torch.randn((6, trained.model.latent_dim), generator=generator)
    z = (kept.means[0] + kept.covariances[0].diagonal().sqrt() * eps).float()
    with torch.no_grad():
        expected = trained.model.likelihood.mean(trained.model.decode(z))
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-5)


def test_evaluate_on_an_ae_says_the_bounds_do_not_apply(ae_run, tmp_path: Path) -> None:
    run, metrics = ae_run
    result = vae(["evaluate", f"ckpt={run}", "probe=false", "pca=false", f"out={tmp_path / 'e'}"], tmp_path)
    ok({"r": result}, "r")
    m = json.loads((tmp_path / "e" / "metrics_test.json").read_text())
    assert m["neg_elbo"] is None and m["iwae_nll"] is None and m["kl"] is None and m["kl_per_dim"] is None
    assert {"neg_elbo", "iwae_nll"} <= set(m["does_not_apply"]) and "bounds nothing" in m["bound"]
    assert m["comparable"] == []
    # the reconstruction still applies: -log p(x|z = code(x)), the training loss, on the same test split
    assert m["recon"] == pytest.approx(metrics["test"]["recon"], rel=1e-5)
    assert math.isfinite(m["recon_error"]) and m["recon_error"] > 0
    assert "do not apply" in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.free_bits=0.5"], "objective=ae has none: leave train.free_bits=0"),
        (["prior=mog"], "objective=ae has no prior"),
    ],
)
def test_ae_refuses_what_it_has_no_use_for(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_train_config(compose_config([*TINY_TRAIN, "objective=ae", *overrides]))


def test_the_diagonal_gaussian_of_codes_and_its_draws() -> None:
    torch.manual_seed(0)
    codes = torch.randn(4000, 3).double() * torch.tensor([0.5, 2.0, 1.0]) + torch.tensor([1.0, -1.0, 0.0])
    gaussian = CodeMixture.diagonal_gaussian(codes, "best.ckpt", 7)
    assert (gaussian.components, gaussian.codes, gaussian.step) == (1, 4000, 7)
    torch.testing.assert_close(gaussian.means[0], codes.mean(0))
    assert torch.count_nonzero(gaussian.covariances[0] - torch.diag(gaussian.covariances[0].diagonal())) == 0
    draws = gaussian.sample(50_000, torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(draws.mean(0), codes.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), codes.std(0), atol=0.03, rtol=0.02)
