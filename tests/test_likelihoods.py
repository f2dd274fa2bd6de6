"""The likelihoods (vae_cli/likelihoods.py): log p(x|z) against torch.distributions and BCE-with-logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from vae_cli.config import LossConfig
from vae_cli.likelihoods import Bernoulli as BernoulliLikelihood
from vae_cli.likelihoods import BernoulliNLL, Gaussian, create_likelihood


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


@pytest.mark.parametrize(
    "likelihood", [BernoulliLikelihood(), Gaussian("pixel", 0.3, 1e-3)], ids=["bernoulli", "gaussian"]
)
def test_log_prob_of_draws_broadcasts_the_data_instead_of_copying_it(likelihood) -> None:
    """The IWAE scores (s, N, ...) decodings against (N, ...) data by broadcasting: equal to scoring the
    flattened decodings against the data repeated s times."""
    g = torch.Generator().manual_seed(0)
    s, n = 5, 7
    params = 6 * torch.randn(s * n, likelihood.param_channels, 4, 4, generator=g)
    for x in (
        torch.bernoulli(torch.full((n, 1, 4, 4), 0.3), generator=g),
        torch.rand(n, 1, 4, 4, generator=g),
    ):
        expected = likelihood.log_prob(params, x.unsqueeze(0).expand(s, *x.shape).flatten(0, 1)).view(s, n)
        torch.testing.assert_close(
            likelihood.log_prob(params.view(s, n, *params.shape[1:]), x), expected, atol=1e-4, rtol=1e-5
        )


@pytest.mark.parametrize("log_scale", [math.log(1e-4), math.log(1e-3), math.log(0.05), math.log(0.5)])
def test_discretized_logistic_is_a_distribution_over_the_256_levels(log_scale: float) -> None:
    """Each pixel's masses over its 256 levels sum to 1 (the end bins reach to -inf and +inf), match the
    logistic CDF's differences computed directly in float64, and are never above 1 (a code length >= 0),
    whatever the mean, even far outside [0, 1]."""
    lik = create_likelihood(LossConfig(name="logistic", scale="pixel", init_scale=0.05, min_scale=1e-4))
    mu = torch.tensor([0.3, 0.0, 1.0, 0.5, 0.5 + 0.5 / 255, -3.0, 4.0]).view(-1, 1, 1, 1)
    params = torch.cat([mu, torch.full_like(mu, log_scale)], 1).expand(256, -1, -1, -1, -1)
    levels = torch.arange(256).float().div(255).view(256, 1, 1, 1, 1)
    log_p = lik.log_prob(params, levels).double()  # (256 levels, 7 pixels)
    assert torch.isfinite(log_p).all() and (log_p <= 1e-6).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(7, dtype=torch.float64), atol=2e-4, rtol=0)
    x, m, s = levels.view(256, 1).double(), mu.view(1, -1).double(), math.exp(log_scale)
    upper = torch.where(x > 1 - 0.5 / 255, 1.0, torch.sigmoid((x + 0.5 / 255 - m) / s))
    lower = torch.where(x < 0.5 / 255, 0.0, torch.sigmoid((x - 0.5 / 255 - m) / s))
    direct = (upper - lower).log()
    held = direct.exp() > 1e-6  # where the float64 difference itself is accurate
    torch.testing.assert_close(log_p[held], direct[held], atol=1e-5, rtol=1e-5)


def test_discretized_logistic_draws_and_means_are_pixels() -> None:
    lik = create_likelihood(LossConfig(name="logistic", scale="global", init_scale=0.05, min_scale=1e-4))
    assert lik.param_channels == 1 and lik.log_scale.requires_grad
    params = torch.linspace(-1, 2, 50).view(1, 1, 5, 10)
    draws = lik.sample(params, torch.Generator().manual_seed(0))
    assert torch.equal((draws * 255).round() / 255, draws) and draws.min() >= 0 and draws.max() <= 1
    assert torch.equal(lik.mean(params), params.clamp(0, 1))


def test_discretized_logistic_backward_matches_autograd_numerically() -> None:
    """The hand-written backward against finite differences, at inner bins and both end bins, for a
    scale per pixel and for one scale broadcast to every pixel (loss.scale=global)."""
    from vae_cli.likelihoods import DiscretizedLogisticLogProb

    torch.manual_seed(0)
    mu = (torch.rand(3, 40, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    log_scale = (torch.rand(3, 40, dtype=torch.float64) * 6 - 7).requires_grad_()
    x = torch.randint(0, 256, (3, 40)).double() / 255
    x[0, :5], x[1, :5] = 0.0, 1.0
    assert torch.autograd.gradcheck(DiscretizedLogisticLogProb.apply, (mu, log_scale, x), eps=1e-7, atol=1e-5)
    one = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, s: DiscretizedLogisticLogProb.apply(m, s.expand_as(m), x), (mu, one), eps=1e-7, atol=1e-5
    )
