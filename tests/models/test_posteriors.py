"""The posteriors (vae_cli/models/posteriors.py), each registered one: log q(z|x) of their draws against
a direct computation (the flow's log-det against autograd's Jacobian), seeded draws, the mean code, and
the closed-form KL of the Gaussian with the standard prior against torch.distributions and Monte Carlo.
posterior=categorical is built with K = D classes (one variable); its own maths (log q of one-hot draws,
its KL, the relaxation) is tested in test_categorical.py."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal, kl_divergence

from vae_cli.config import OPTIONS, LossConfig, ModelConfig, PosteriorConfig, PriorConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import POSTERIORS, Posterior, create_model
from vae_cli.models.posteriors import IafStep, gaussian_draws
from vae_cli.models.priors import StandardPrior

D, N = 3, 4


def build(name: str) -> Posterior:
    torch.manual_seed(0)
    small = {"iaf": {"steps": 3, "hidden": 8}, "categorical": {"classes": D}}.get(name, {})
    posterior = POSTERIORS.get(name)(PosteriorConfig(name=name, **small), D)
    for p in posterior.parameters():  # away from the identity, so the flow's terms count
        torch.nn.init.normal_(p, std=0.5)
    return posterior


def params() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(N, D, generator=g), torch.randn(N, D, generator=g) * 0.5


#: the posteriors of continuous codes, whose draws are transformed Gaussian draws
CONTINUOUS = [name for name in POSTERIORS.names() if not build(name).discrete]


def test_every_posterior_has_a_schema() -> None:
    assert POSTERIORS.names() == sorted(OPTIONS["posterior"])


@pytest.mark.parametrize("name", CONTINUOUS)
def test_log_q_of_the_draws_is_the_change_of_variables(name: str) -> None:
    """log q(z) = log N(z0; mu, sigma^2) - log |det dz/dz0|, the determinant from autograd's Jacobian."""
    posterior, h = build(name), params()
    z, log_q = posterior.rsample(h, 2, torch.Generator().manual_seed(1))
    z0, _ = gaussian_draws(*h, 2, torch.Generator().manual_seed(1))  # the same base draws
    base = Independent(Normal(h[0], torch.exp(0.5 * h[1])), 1).log_prob(z0)
    assert z.shape == (2, N, D) and log_q.shape == (2, N)
    for i in range(2):
        for n in range(N):
            one = (h[0][n : n + 1], h[1][n : n + 1])
            flow = getattr(posterior, "flow", lambda z0, h: (z0, None))
            jac = jacobian(lambda v: flow(v[None], one)[0][0], z0[i, n])  # noqa: B023
            torch.testing.assert_close(flow(z0[i, n][None], one)[0][0], z[i, n])
            expected = base[i, n] - torch.linalg.slogdet(jac).logabsdet
            torch.testing.assert_close(log_q[i, n], expected, atol=1e-5, rtol=1e-5)


def test_an_iaf_step_is_autoregressive_with_diagonal_sigma() -> None:
    torch.manual_seed(0)
    step = IafStep(D, 8, 2 * D)
    for p in step.parameters():
        torch.nn.init.normal_(p, std=0.5)
    z, h = torch.randn(D), torch.randn(2 * D)
    conditioning = step.conditioning(h[None])
    jac = jacobian(lambda v: step(v[None], conditioning)[0][0], z)
    assert torch.equal(jac.triu(1), torch.zeros(D, D))  # z'_j depends on z_<=j only
    torch.testing.assert_close(jac.diagonal().log().sum(), step(z[None], conditioning)[1][0])


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_draws_are_seeded(name: str) -> None:
    posterior, h = build(name), params()
    with torch.no_grad():
        a = posterior.rsample(h, 3, torch.Generator().manual_seed(1))
        b = posterior.rsample(h, 3, torch.Generator().manual_seed(1))
        c = posterior.rsample(h, 3, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_the_mean_code(name: str) -> None:
    """The Gaussian's mean is mu; a flow's is the image of mu (the draw at eps = 0); the categorical's,
    the most likely class one-hot."""
    posterior, h = build(name), params()
    with torch.no_grad():
        mean = posterior.mean(h)
        if posterior.discrete:
            expected = torch.nn.functional.one_hot(h[0].argmax(-1), D).float()
        else:
            expected = posterior.flow(h[0], h)[0] if name != "gaussian" else h[0]
    assert mean.shape == (N, D)
    torch.testing.assert_close(mean, expected)


def test_the_gaussian_kl_to_the_standard_prior_is_closed_form_and_the_mean_of_log_q_minus_log_p() -> None:
    posterior, h, prior = build("gaussian"), params(), StandardPrior(D)
    kl = posterior.kl(h, prior)
    q = Normal(h[0], torch.exp(0.5 * h[1]))
    torch.testing.assert_close(kl, kl_divergence(q, Normal(0.0, 1.0)))
    z, log_q = posterior.rsample(h, 100_000, torch.Generator().manual_seed(0))
    monte_carlo = (log_q - prior.log_prob(z)).mean(0)
    torch.testing.assert_close(monte_carlo, kl.sum(1), atol=0.03, rtol=0.02)


@pytest.mark.parametrize(
    ("prior", "posterior"), [("mog", "gaussian"), ("vamp", "gaussian"), ("standard", "iaf")]
)
def test_without_a_closed_form_the_model_estimates_the_kl_on_its_draws(prior: str, posterior: str) -> None:
    torch.manual_seed(0)
    model = create_model(
        ModelConfig(name="mlp", hidden_dims=[8]),
        (1, 2, 2),
        D,
        create_likelihood(LossConfig(name="bernoulli")),
        PriorConfig(name=prior),
        PosteriorConfig(name=posterior),
    )
    assert not model.closed_form
    out = model(torch.rand(N, 1, 2, 2), torch.Generator().manual_seed(0))
    assert out.kl_per_dim is None and out.log_q.shape == out.log_p.shape == (1, N)
    torch.testing.assert_close(out.log_p, model.prior.log_prob(out.z)[None])
