"""The per-example bounds (vae_cli/estimators.py): the importance-weighted bound against the exact log p(x) of a linear-Gaussian model.

Probabilistic PCA, p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), has p(x) = N(b, W W^T + s^2 I) in closed
form and the Gaussian posterior q*(z|x) = N(M^-1 W^T (x - b), s^2 M^-1), M = W^T W + s^2 I. A VAE with a
linear decoder and a linear encoder that outputs the diagonal of that posterior is a PPCA model with a
slightly wrong q: ELBO < IWAE_k < log p(x), and IWAE_k -> log p(x) as k grows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from vae_cli.estimators import draws_and_log_ratio, importance_weighted_bound, iwae_log_likelihood
from vae_cli.likelihoods import Gaussian
from vae_cli.models import VAE

D, d, SIGMA = 6, 2, 0.5


def ppca_vae(w: torch.Tensor, b: torch.Tensor, sigma: float, var_scale: float = 1.0) -> VAE:
    """The VAE whose decoder is x ~ N(Wz + b, sigma^2 I) and whose encoder gives the exact posterior mean
    and the diagonal of the exact posterior covariance (times var_scale)."""
    m = w.T @ w + sigma**2 * torch.eye(d)
    m_inv = torch.linalg.inv(m)
    a = m_inv @ w.T  # posterior mean = A (x - b)
    post_var = torch.diagonal(sigma**2 * m_inv) * var_scale
    enc = nn.Linear(D, 2 * d)
    dec = nn.Linear(d, D)
    with torch.no_grad():
        enc.weight.copy_(torch.cat([a, torch.zeros(d, D)]))
        enc.bias.copy_(torch.cat([-a @ b, post_var.log()]))
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    likelihood = Gaussian("fixed", sigma, min_sigma=1e-4)
    model = VAE(
        nn.Sequential(nn.Flatten(), enc),
        nn.Sequential(dec, nn.Unflatten(1, (1, 1, D))),
        likelihood,
        d,
        (1, 1, D),
    )
    return model.eval()


def ppca_data(
    w: torch.Tensor, b: torch.Tensor, sigma: float, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws from the PPCA model (as (n, 1, 1, D) 'images') and their exact log p(x)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    x = z @ w.T + b + sigma * torch.randn(n, D, generator=g)
    cov = w.double() @ w.double().T + sigma**2 * torch.eye(D, dtype=torch.float64)
    log_px = MultivariateNormal(b.double(), covariance_matrix=cov).log_prob(x.double())
    return x.view(n, 1, 1, D), log_px


@pytest.fixture(scope="module")
def correlated() -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """W with non-orthogonal columns: the true posterior is correlated, so the diagonal q is not exact."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, d, generator=g)
    w[:, 1] = 0.8 * w[:, 0] + 0.6 * w[:, 1]
    b = torch.randn(D, generator=g)
    x, log_px = ppca_data(w, b, SIGMA, 500, seed=1)
    return ppca_vae(w, b, SIGMA), x, log_px


def test_exact_posterior_makes_every_weight_p_of_x() -> None:
    """Orthogonal columns of W make the posterior diagonal: then q = p(z|x) exactly, every importance
    weight equals p(x), and ELBO = IWAE_k = log p(x) for any k and any chunking."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    w = q * torch.tensor([2.0, 0.7])
    b = torch.randn(D, generator=g)
    model = ppca_vae(w, b, SIGMA)
    x, log_px = ppca_data(w, b, SIGMA, 50, seed=2)
    for k, chunk in [(1, None), (7, 3), (64, 64), (64, 1)]:
        est = importance_weighted_bound(model, x, k, chunk, torch.Generator().manual_seed(3))
        torch.testing.assert_close(est.log_px, log_px, atol=2e-4, rtol=0)
        torch.testing.assert_close(est.elbo, log_px, atol=2e-4, rtol=0)


def test_iwae_between_elbo_and_log_px_and_tightens_with_k(correlated) -> None:
    model, x, log_px = correlated
    gaps = {}
    for k in (1, 4, 16, 64, 1000, 5000):
        est = importance_weighted_bound(model, x, k, generator=torch.Generator().manual_seed(k))
        # Jensen on the same draws: the ELBO never exceeds the bound, example by example.
        assert torch.all(est.elbo <= est.log_px + 1e-9)
        gaps[k] = float((log_px - est.log_px).mean())
        # A bound from below in expectation: on average it stays under log p(x), up to sampling noise.
        assert gaps[k] > -0.01, (k, gaps)
    elbo_gap = float((log_px - est.elbo).mean())
    assert elbo_gap > 1.0, elbo_gap  # the diagonal q misses the posterior's correlation...
    assert gaps[1] > gaps[4] > gaps[16] > gaps[64], gaps  # ...and more samples close the gap
    assert abs(gaps[1000]) < 0.01 and abs(gaps[5000]) < 0.005, gaps  # to within noise of log p(x)


def test_elbo_estimate_matches_closed_form(correlated) -> None:
    """The sampled ELBO agrees with E_q[log p(x|z)] - KL in closed form (a Gaussian decoder's expectation
    is exact: E||x - Wz - b||^2 = ||x - W mu - b||^2 + tr(W diag(var) W^T))."""
    model, x, _ = correlated
    est = importance_weighted_bound(model, x, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        w, b = model.decoder[0].weight, model.decoder[0].bias
        resid = x.view(len(x), D) - mu @ w.T - b
        expected_sq = resid.pow(2).sum(1) + (logvar.exp() * w.pow(2).sum(0)).sum(1)
        log_px_z = -0.5 * expected_sq / SIGMA**2 - D * math.log(SIGMA) - 0.5 * D * math.log(2 * math.pi)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    torch.testing.assert_close(est.elbo.float().mean(), (log_px_z - kl).mean(), atol=0.02, rtol=0)


def test_wider_proposal_also_converges(correlated) -> None:
    """A q wider than the posterior (the safe direction for importance sampling) converges as well."""
    _, x, log_px = correlated
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, d, generator=g)
    w[:, 1] = 0.8 * w[:, 0] + 0.6 * w[:, 1]
    b = torch.randn(D, generator=g)
    model = ppca_vae(w, b, SIGMA, var_scale=2.0)
    gap = (log_px - iwae_log_likelihood(model, x, 2000, chunk=500)).mean()
    assert -0.01 < float(gap) < 0.02


def test_closed_form_draws_and_log_ratio_match_torch_distributions() -> None:
    """The Gaussian posterior with the standard prior (the fused path): z = mu + sigma * eps from the
    generator's eps, and log p(z) - log q(z|x) of those very draws as torch.distributions scores them."""
    model = ppca_vae(torch.randn(D, d), torch.randn(D), SIGMA)
    assert model.closed_form
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, d, generator=g) * 2, torch.randn(5, d, generator=g)
    std = torch.exp(0.5 * logvar)
    z, ratio = draws_and_log_ratio(model, mu, logvar, std, 3, torch.Generator().manual_seed(1))
    eps = torch.randn(3, 5, d, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z, mu + std * eps)
    z64 = z.double()
    log_q = Normal(mu.double(), std.double()).log_prob(z64).sum(-1)
    expected = Normal(0.0, 1.0).log_prob(z64).sum(-1) - log_q
    torch.testing.assert_close(ratio.double(), expected, rtol=1e-5, atol=1e-5)
