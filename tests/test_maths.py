"""The maths against closed forms and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vae_cli.config import LossConfig, ModelConfig
from vae_cli.likelihoods import BernoulliNLL, Gaussian, create_likelihood
from vae_cli.models import create_model
from vae_cli.models.vae import gaussian_kl
from vae_cli.objectives import beta_at, elbo_terms


def test_kl_closed_form_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = Normal(mu, torch.exp(0.5 * logvar))
    expected = kl_divergence(q, Normal(torch.zeros(3), torch.ones(3)))
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_kl_closed_form_matches_monte_carlo() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.7, -1.2, 0.0]]), torch.tensor([[-0.5, 0.4, 1.0]])
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean()
    closed = gaussian_kl(mu, logvar).sum()
    assert abs(monte_carlo - closed) < 0.02
    assert closed > 0
    assert gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).sum() == 0  # q = p


def test_bernoulli_log_prob_matches_torch() -> None:
    torch.manual_seed(0)
    logits, x = torch.randn(4, 1, 5, 5) * 3, torch.randint(0, 2, (4, 1, 5, 5)).float()
    lik = create_likelihood(LossConfig(name="bernoulli"))
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(logits, x), expected)
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits))


def test_bernoulli_nll_matches_bce_with_logits_in_value_and_gradient() -> None:
    """The hand-written forward/backward of the Bernoulli NLL against torch's BCE-with-logits, including
    logits far in the tails (where a naive log(sigmoid(l)) would give -inf) and grey-level targets."""
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(6, 50) * 4, torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0] * 10])])
    x = torch.rand(7, 50)
    x[:3] = x[:3].round()
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    nll = BernoulliNLL.apply(ours, xo)
    expected = F.binary_cross_entropy_with_logits(theirs, xt, reduction="none").sum(1)
    torch.testing.assert_close(nll, expected, rtol=1e-6, atol=1e-4)
    weights = torch.randn(7)  # a non-uniform upstream gradient
    (nll * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    torch.testing.assert_close(xo.grad, xt.grad)
    double = (
        torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
        torch.rand(3, 5, dtype=torch.float64),
    )
    assert torch.autograd.gradcheck(BernoulliNLL.apply, double)
    draws = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)  # x (3, 5) broadcast over draws
    assert torch.autograd.gradcheck(
        BernoulliNLL.apply, (draws, torch.rand(3, 5, dtype=torch.float64, requires_grad=True))
    )


@pytest.mark.parametrize("variance", ["fixed", "global", "pixel"])
def test_gaussian_log_prob_matches_torch(variance: str) -> None:
    torch.manual_seed(0)
    lik = create_likelihood(LossConfig(name="gaussian", variance=variance, sigma=0.3, min_sigma=1e-3))
    x = torch.rand(3, 2, 4, 4)
    params = torch.randn(3, 2 * lik.param_channels, 4, 4)
    if variance == "pixel":
        mu, log_sigma = params.chunk(2, dim=1)
    else:
        mu, log_sigma = params, torch.full_like(params, math.log(0.3))
    expected = Normal(mu, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(params, x), expected)
    torch.testing.assert_close(lik.mean(params), mu)


def test_gaussian_variances_are_learned_only_when_asked() -> None:
    fixed = Gaussian("fixed", 0.1, 1e-3)
    learned = Gaussian("global", 0.1, 1e-3)
    assert not list(fixed.parameters())
    assert [p.shape for p in learned.parameters()] == [torch.Size([])]


def test_learned_sigma_is_floored() -> None:
    lik = Gaussian("pixel", 0.1, 0.01)
    params = torch.cat([torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), -50.0)], dim=1)
    expected = Normal(torch.zeros(1, 1, 2, 2), 0.01).log_prob(torch.zeros(1, 1, 2, 2)).sum()
    torch.testing.assert_close(lik.log_prob(params, torch.zeros(1, 1, 2, 2)), expected.view(1))


def test_elbo_terms_are_per_example_sums_in_nats() -> None:
    """recon = -log p(x|z) summed over pixels, KL summed over latents, no hidden scaling."""
    torch.manual_seed(0)
    lik = create_likelihood(LossConfig(name="bernoulli"))
    model = create_model(ModelConfig(name="mlp", hidden_dims=[16]), (1, 4, 4), 3, lik)
    x = torch.randint(0, 2, (6, 1, 4, 4)).float()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    terms = elbo_terms(model, x, generator=g1)
    out = model(x, g2)
    recon = -Bernoulli(logits=out.params).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(out.mu, (0.5 * out.logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.loss(beta=4.0), (recon + 4.0 * kl).mean())


def test_reparameterisation_draws_from_q() -> None:
    mu, logvar = torch.full((200_000, 1), 2.0), torch.full((200_000, 1), math.log(0.25))
    z = create_model(
        ModelConfig(name="mlp"), (1, 2, 2), 1, create_likelihood(LossConfig(name="bernoulli"))
    ).reparameterize(mu, logvar)
    assert abs(z.mean() - 2.0) < 0.01
    assert abs(z.std() - 0.5) < 0.01


def test_beta_warmup_ramps_linearly_from_zero() -> None:
    assert beta_at(0, 4.0, 100) == 0.0
    assert beta_at(50, 4.0, 100) == 2.0
    assert beta_at(100, 4.0, 100) == 4.0
    assert beta_at(1000, 4.0, 100) == 4.0
    assert beta_at(0, 4.0, 0) == 4.0
