"""The priors (vae_cli/models/priors.py), each registered one: log p(z) against torch.distributions,
sample shapes, seeded draws, and samples that follow the prior's own distribution. prior=uniform is built
paired with posterior=categorical of K = D classes (one variable), as create_model pairs them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, OneHotCategorical

from vae_cli.config import OPTIONS, PosteriorConfig, PriorConfig
from vae_cli.models import POSTERIORS, PRIORS, Prior

D, SHAPE = 3, (1, 4, 4)


def build(name: str) -> Prior:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(SHAPE), 2 * D))
    small = {"mog": {"components": 4}, "vamp": {"pseudo_inputs": 5}}.get(name, {})
    prior = PRIORS.get(name)(PriorConfig(name=name, **small), D, SHAPE, encoder)
    if prior.categorical:  # told its K by the posterior it serves
        prior = POSTERIORS.get("categorical")(PosteriorConfig(name="categorical", classes=D), D).pair(prior)
    return prior


def codes(prior: Prior, shape: tuple[int, ...]) -> torch.Tensor:
    """Codes to score, (*shape, D): spread-out values, or one-hot codes for a prior of one-hot codes."""
    g = torch.Generator().manual_seed(7)
    if prior.categorical:
        return torch.eye(D)[torch.randint(D, shape, generator=g)]
    return torch.randn(*shape, D, generator=g) * 2


def reference(prior: Prior) -> torch.distributions.Distribution:
    """The same prior as a torch.distributions object."""
    if prior.categorical:  # one variable of K = D classes
        return OneHotCategorical(probs=torch.full((D,), 1 / D))
    if prior.standard:
        return Independent(Normal(torch.zeros(D), torch.ones(D)), 1)
    if hasattr(prior, "components"):  # vamp: the encoder's Gaussians of the pseudo-inputs, equal weights
        mean, logvar = prior.components()
        weights = torch.ones(len(mean))
    else:
        mean, logvar, weights = prior.means, prior.logvars, prior.logits.softmax(0)
    normal = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)
    return MixtureSameFamily(Categorical(probs=weights), normal)


def test_every_prior_has_a_schema() -> None:
    assert PRIORS.names() == sorted(OPTIONS["prior"])


@pytest.mark.parametrize("name", PRIORS.names())
def test_log_prob_matches_torch_distributions(name: str) -> None:
    prior = build(name)
    if name == "mog":  # unequal weights and variances, so every parameter counts
        with torch.no_grad():
            prior.logits.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
            prior.logvars.copy_(torch.randn(4, D))
    z = codes(prior, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(prior.log_prob(z), reference(prior).log_prob(z))


@pytest.mark.parametrize("name", PRIORS.names())
def test_samples_are_seeded_and_shaped(name: str) -> None:
    prior = build(name)
    with torch.no_grad():
        a = prior.sample(6, torch.Generator().manual_seed(1))
        b = prior.sample(6, torch.Generator().manual_seed(1))
        c = prior.sample(6, torch.Generator().manual_seed(2))
    assert a.shape == (6, D)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", PRIORS.names())
def test_samples_follow_the_prior(name: str) -> None:
    """The samples' mean and variance are the prior's (a mixture's: sum_k w_k m_k and its spread), so a
    mixture prior draws from its components, not from N(0, I)."""
    prior = build(name)
    if name == "mog":
        with torch.no_grad():
            prior.means.mul_(3)
    with torch.no_grad():
        z = prior.sample(40_000, torch.Generator().manual_seed(0))
        ref = reference(prior)
    torch.testing.assert_close(z.mean(0), ref.mean, atol=0.05, rtol=0.05)
    torch.testing.assert_close(z.var(0), ref.variance, atol=0.08, rtol=0.05)


def test_temperature_scales_each_component() -> None:
    prior = build("mog")
    with torch.no_grad():
        prior.logvars.fill_(math.log(4.0))
        z = prior.sample(20_000, torch.Generator().manual_seed(0), temperature=0.0)
    # at temperature 0 every draw is one of the component means
    nearest = (z[:, None, :] - prior.means.detach()).abs().amax(-1).min(1).values
    assert nearest.max() == 0


def test_the_vamp_prior_learns_through_its_pseudo_inputs_and_the_encoder() -> None:
    prior = build("vamp")
    prior.log_prob(torch.randn(4, D)).sum().backward()
    assert prior.pseudo_inputs.grad is not None and prior.pseudo_inputs.grad.abs().sum() > 0
    assert "encoder.1.weight" not in dict(prior.named_parameters())  # held by reference, not owned
    assert prior.encoder[1].weight.grad is not None
