"""posterior=categorical with prior=uniform (vae_cli/models/posteriors.py CategoricalPosterior,
vae_cli/models/priors.py UniformPrior): the closed-form KL against torch.distributions, the Gumbel-softmax
draws (on the simplex, one-hot in the limit tau -> 0, the Gumbel-max class exact), the exact discrete IWAE
bound against brute-force enumeration of every code, the annealing schedule and the loop's clock, one tiny
run through the compose API in this process (train with its TensorBoard reconstructions and prior
samples, evaluate, sample, traverse, load_model), and the one-line errors.

The registry-wide tests (test_posteriors.py, test_priors.py) run the new entries too; the variants' end to
end test (test_variants_end_to_end.py) does not, because its checks are those of Gaussian codes (the
encoder's Gaussian KL per dimension, N(0, 1) traversals): this file runs that path for the categorical."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Categorical, OneHotCategorical, kl_divergence

from tests.helpers.cli import one_error, vae
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.config import LossConfig, ModelConfig, PosteriorConfig, PriorConfig
from vae_cli.config.compose import compose_config
from vae_cli.config.posteriors import validate_posterior
from vae_cli.errors import ConfigError
from vae_cli.estimators import importance_weighted_bound
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import VAE, create_model
from vae_cli.models.posteriors import CategoricalPosterior
from vae_cli.models.priors import UniformPrior

N, V, K = 4, 3, 5  # examples, variables, classes


def posterior(tau: float = 1.0, tau_min: float = 0.5, rate: float = 0.0, **kw) -> CategoricalPosterior:
    return CategoricalPosterior(V * K, K, tau, tau_min, rate, **kw)


def logits() -> tuple[torch.Tensor, torch.Tensor]:
    """h = (logits, the unused half), (N, V * K)."""
    g = torch.Generator().manual_seed(3)
    return 2 * torch.randn(N, V * K, generator=g), torch.zeros(N, V * K)


def blocks(z: torch.Tensor) -> torch.Tensor:
    return z.unflatten(-1, (V, K))


def tiny_model(variables: int = 2, classes: int = 3) -> VAE:
    """An MLP over 2x2 binary images with `variables` categorical variables, its decoder's weights spread
    wide so that p(x|z) depends on z, its encoder's less, so that q(z|x) puts mass on every code."""
    torch.manual_seed(0)
    model = create_model(
        ModelConfig(name="mlp", hidden_dims=[8]),
        (1, 2, 2),
        variables * classes,
        create_likelihood(LossConfig(name="bernoulli")),
        PriorConfig(name="uniform"),
        PosteriorConfig(name="categorical", classes=classes),
    )
    for part, std in ((model.decoder, 1.5), (model.encoder, 0.5)):  # q spread over every code
        for p in part.parameters():
            torch.nn.init.normal_(p, std=std)
    return model.eval()


# --- the maths ------------------------------------------------------------------------------------------


def test_the_kl_is_the_categoricals_closed_form_split_over_the_code_values() -> None:
    q, h = posterior(), logits()
    prior = q.pair(UniformPrior(V * K))
    kl = q.kl(h, prior)
    expected = kl_divergence(Categorical(logits=blocks(h[0])), Categorical(probs=torch.full((K,), 1 / K)))
    assert kl.shape == (N, V * K) and (kl >= 0).all()
    torch.testing.assert_close(blocks(kl).sum(-1), expected)  # per variable: sum_k q_k log(K q_k)
    torch.testing.assert_close(blocks(kl), blocks(kl)[..., :1].expand(N, V, K))  # equal shares
    # and the mean of log q - log p over exact draws, as the sampled KL would estimate it
    with torch.no_grad():
        z, log_q = q.rsample(h, 20_000, torch.Generator().manual_seed(0))
    monte_carlo = (log_q - prior.log_prob(z)).mean(0)
    torch.testing.assert_close(monte_carlo, kl.sum(1), atol=0.03, rtol=0.02)


def test_exact_draws_are_one_hot_with_log_q_of_the_drawn_classes_and_its_frequencies() -> None:
    q, h = posterior(), logits()
    with torch.no_grad():
        z, log_q = q.rsample(h, 20_000, torch.Generator().manual_seed(1))
    assert z.shape == (20_000, N, V * K) and set(z.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(blocks(z).sum(-1), torch.ones(20_000, N, V))
    reference = OneHotCategorical(logits=blocks(h[0]))
    torch.testing.assert_close(log_q, reference.log_prob(blocks(z)).sum(-1))
    torch.testing.assert_close(blocks(z).mean(0), reference.probs, atol=0.015, rtol=0)
    assert torch.equal(q.mean(h), torch.nn.functional.one_hot(blocks(h[0]).argmax(-1), K).float().flatten(1))


def test_relaxed_draws_lie_on_the_simplex_relax_the_exact_draw_and_become_one_hot_as_tau_goes_to_0() -> None:
    h = (logits()[0].requires_grad_(), logits()[1])
    exact, _ = posterior().eval().rsample(h, 200, torch.Generator().manual_seed(2))
    near_one_hot = []
    for tau in (1.0, 0.1, 1e-4):
        q = posterior(tau=tau, tau_min=tau).train()
        z, _ = q.rsample(h, 200, torch.Generator().manual_seed(2))
        y = blocks(z)
        assert z.shape == (200, N, V * K) and (y >= 0).all()
        torch.testing.assert_close(y.sum(-1), torch.ones(200, N, V))
        assert torch.equal(y.argmax(-1), blocks(exact).argmax(-1))  # it relaxes the same Gumbel-max draw
        near_one_hot.append(float(((y - blocks(exact)).abs().amax(-1) < 1e-3).float().mean()))
        (z * torch.arange(V * K)).sum().backward()
        assert h[0].grad.abs().sum() > 0  # differentiable in the logits
        h[0].grad = None
    assert near_one_hot[0] < 0.05 and near_one_hot[0] < near_one_hot[1] < near_one_hot[2]
    assert near_one_hot[2] > 0.99  # the limit tau -> 0: one-hot


def test_straight_through_decodes_one_hot_codes_with_the_relaxed_gradient() -> None:
    h0 = logits()[0]
    weights = torch.randn(V * K)
    grads = []
    for straight in (True, False):
        x = h0.clone().requires_grad_()
        q = posterior(straight_through=straight).train()
        z, _ = q.rsample((x, x), 3, torch.Generator().manual_seed(4))
        if straight:
            assert set(z.unique().tolist()) == {0.0, 1.0}
        (z * weights).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_the_uniform_prior_scores_and_draws_one_hot_codes() -> None:
    prior = posterior().pair(UniformPrior(V * K))
    z = prior.sample(30_000, torch.Generator().manual_seed(0))
    assert z.shape == (30_000, V * K) and torch.equal(blocks(z).sum(-1), torch.ones(30_000, V))
    torch.testing.assert_close(blocks(z).mean(0), torch.full((V, K), 1 / K), atol=0.01, rtol=0)
    reference = OneHotCategorical(probs=torch.full((V, K), 1 / K))
    torch.testing.assert_close(prior.log_prob(z[:5]), reference.log_prob(blocks(z[:5])).sum(-1))
    assert torch.equal(
        prior.sample(4, torch.Generator().manual_seed(1)), prior.sample(4, torch.Generator().manual_seed(1))
    )


def enumerate_codes(variables: int, classes: int) -> torch.Tensor:
    """Every code: (classes^variables, variables * classes) one-hot blocks."""
    eye = torch.eye(classes)
    return torch.stack(
        [torch.cat([eye[c] for c in combo]) for combo in itertools.product(range(classes), repeat=variables)]
    )


def test_the_iwae_bound_is_the_discrete_models_exact_bound_against_enumeration() -> None:
    """N = 2 variables of K = 3 classes: log p(x) = logsumexp over the 9 codes of log p(x|z) - N log K,
    and the ELBO by enumeration too. E[IWAE_1] is the ELBO, E[IWAE_k] rises with k and stays below
    log p(x), and IWAE_k converges to it."""
    model = tiny_model()
    x = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.float32).view(3, 1, 2, 2)
    codes = enumerate_codes(2, 3)
    with torch.no_grad():
        params = model.decode(codes)
        log_px_z = model.likelihood.log_prob(params[:, None].expand(9, 3, *params.shape[1:]), x)  # (9, 3)
        log_pz = -2 * math.log(3)
        log_px = torch.logsumexp(log_px_z + log_pz, 0)
        log_pi = model.posterior.log_probs(model.encode(x))  # (3, 2, 3)
        log_q = (codes.view(9, 1, 2, 3) * log_pi).sum((-1, -2))  # (9, 3)
        elbo = (log_q.exp() * (log_px_z + log_pz - log_q)).sum(0)
    assert (elbo < log_px - 0.05).all()  # a real gap, so the checks below tell the bounds apart

    def mean_iwae(k: int, repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
        """E[IWAE_k] per example by `repeats` independent estimates, and 4 standard errors of it."""
        generator = torch.Generator().manual_seed(k)
        log_px_k = importance_weighted_bound(model, x.repeat(repeats, 1, 1, 1), k, generator=generator).log_px
        log_px_k = log_px_k.view(repeats, 3).float()
        return log_px_k.mean(0), 4 * log_px_k.std(0, correction=min(1, repeats - 1)) / math.sqrt(repeats)

    (iwae_1, tol_1), (iwae_10, tol_10) = mean_iwae(1, 20_000), mean_iwae(10, 2000)
    assert ((iwae_1 - elbo).abs() < tol_1).all()  # E[IWAE_1] = the ELBO
    assert (iwae_1 < iwae_10).all() and (iwae_10 <= log_px + tol_10).all()
    assert ((mean_iwae(200_000, 1)[0] - log_px).abs() < 0.05).all()  # converging to log p(x)


# --- the schedule ----------------------------------------------------------------------------------------


def test_the_temperature_anneals_exponentially_to_its_floor() -> None:
    q = posterior(tau=2.0, tau_min=0.5, rate=1e-3)
    assert q.temperature(0) == 2.0
    assert q.temperature(500) == pytest.approx(2.0 * math.exp(-0.5))
    assert q.temperature(10_000) == 0.5  # 2 e^-10 < 0.5: held at tau_min
    model = tiny_model()
    model.posterior.schedule = (1.0, 0.5, 1e-2)
    model.at_step(50)
    assert float(model.posterior.tau) == pytest.approx(math.exp(-0.5))
    assert posterior(rate=0.0).temperature(10**6) == 1.0  # rate 0 keeps tau


# --- a run, in this process ----------------------------------------------------------------------------

OPTIONS = [
    *(o for o in TINY_SYNTHETIC if not o.startswith("latent_dim=")),
    "latent_dim=6",
    "posterior=categorical",
    "posterior.classes=3",
    "posterior.anneal_rate=0.1",
    "prior=uniform",
    "train.epochs=1",
    "train.image_every=1",
]


def test_a_run_trains_anneals_evaluates_samples_and_traverses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the compose API, in this process: `vae train`'s config and loop (latent_dim left
    automatic), then `vae evaluate` and `vae sample` (mean, traverse, manifold) on the checkpoint."""
    from vae_cli.commands.evaluate import evaluate
    from vae_cli.commands.sample import sample
    from vae_cli.training.loop import train

    steps: list[int] = []
    at_step = CategoricalPosterior.at_step
    monkeypatch.setattr(CategoricalPosterior, "at_step", lambda self, t: (steps.append(t), at_step(self, t)))
    automatic = [o for o in OPTIONS if not o.startswith("latent_dim=")]
    metrics = train(compose_config([*automatic, f"data_dir={tmp_path}"]), tmp_path / "run")
    assert steps == list(range(metrics["steps"])) and len(steps) > 1  # the loop's clock, before each step
    assert all(math.isfinite(metrics["test"][k]) for k in ("loss", "recon", "kl"))
    assert metrics["automatic"]["latent_dim"] == 16 * 3  # automatic: 16 variables of 3 classes
    run = tmp_path / "run"

    m = evaluate(
        compose_config([f"ckpt={run}", "iwae_k=16", "probe=false", "pca=false"], "evaluate"), tmp_path / "e"
    )
    assert (m["prior"], m["posterior"], m["iwae_bound"]) == ("uniform", "categorical", "exact discrete")
    assert math.isfinite(m["iwae_nll"]) and m["iwae_nll"] <= m["neg_elbo"] + 1e-6  # the same draws
    assert m["neg_elbo"] == pytest.approx(m["recon"] + m["kl"])
    assert len(m["kl_per_dim"]) == m["latent_dim"] == 48 and "uniform" in m["kl_per_dim_means"]
    assert json.loads((tmp_path / "e" / "metrics_test.json").read_text())["iwae_bound"] == "exact discrete"

    cfg = compose_config([f"ckpt={run}", "n=8"], "sample")
    sample(cfg, tmp_path / "s")
    cfg.mode, cfg.base = "traverse", "image"
    traverse = sample(cfg, tmp_path / "t")
    assert (tmp_path / "s" / "samples.png").is_file() and (tmp_path / "t" / "traverse.png").is_file()
    assert traverse["columns"] == [0, 1, 2] and {"variable", "kl"} <= set(traverse["rows"][0])
    cfg.mode = "manifold"
    with pytest.raises(ConfigError, match="^mode=manifold sweeps two continuous"):
        sample(cfg, tmp_path / "m")

    from vae_cli import load_model

    model = load_model(run, "cpu")
    assert type(model.prior).__name__ == "UniformPrior" and model.prior.classes == 3
    z = model.prior_codes(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z.view(5, 16, 3).sum(-1), torch.ones(5, 16))


# --- one line for what cannot work -----------------------------------------------------------------------


PAIR = {
    "prior": {"name": "uniform"},
    "posterior": {"name": "categorical", "classes": 3, "tau": 1.0, "tau_min": 0.5},
    "objective": {"name": "elbo"},
    "model": {"name": "conv"},
    "latent_dim": 6,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"posterior": {"tau": 0.4}}, "posterior.tau_min=0.5 is invalid: must be <= posterior.tau=0.4"),
        ({"prior": {"name": "standard"}}, "posterior=categorical needs prior=uniform"),
        ({"prior": {"name": "mog"}}, "posterior=categorical needs prior=uniform"),
        ({"objective": {"name": "iwae"}}, "objective=iwae does not train posterior=categorical"),
        ({"objective": {"name": "ae"}}, "objective=ae does not train posterior=categorical"),
        ({"latent_dim": 7}, "latent_dim=7 is invalid: must be a multiple of posterior.classes=3"),
        ({"model": {"name": "ladder"}}, "posterior=categorical serves one-layer models"),
        (
            {"posterior": {"name": "gaussian"}},
            "prior=uniform is the uniform categorical prior of posterior=categorical",
        ),
    ],
)
def test_impossible_combinations_stop_with_one_line(changes: dict, message: str) -> None:
    validate_posterior(OmegaConf.create(PAIR))
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        validate_posterior(OmegaConf.merge(PAIR, changes))


def test_the_model_builder_refuses_them_too() -> None:
    model, likelihood = (
        ModelConfig(name="mlp", hidden_dims=[4]),
        create_likelihood(LossConfig(name="bernoulli")),
    )
    categorical = PosteriorConfig(name="categorical", classes=3)
    with pytest.raises(ConfigError, match="needs prior=uniform"):
        create_model(model, (1, 2, 2), 6, likelihood, PriorConfig(name="standard"), categorical)
    with pytest.raises(ConfigError, match="^prior=uniform is the uniform categorical prior"):
        create_model(
            model, (1, 2, 2), 6, likelihood, PriorConfig(name="uniform"), PosteriorConfig(name="gaussian")
        )
    with pytest.raises(ConfigError, match="^latent_dim=7 is invalid"):
        create_model(model, (1, 2, 2), 7, likelihood, PriorConfig(name="uniform"), categorical)


def test_a_variable_has_two_classes_or_more() -> None:
    from vae_cli.config import CategoricalPosteriorConfig, check_node

    with pytest.raises(ConfigError, match=re.escape("posterior.classes=1 is invalid: must be at least 2")):
        check_node(OmegaConf.structured(CategoricalPosteriorConfig(classes=1)), "posterior.")


def test_the_cli_says_it_in_one_line(tmp_path: Path) -> None:
    result = vae(["train", *OPTIONS, "posterior.tau_min=2"], tmp_path)
    message = "posterior.tau_min=2.0 is invalid: must be <= posterior.tau=1.0"
    assert message in one_error(result.returncode, result.stderr)
