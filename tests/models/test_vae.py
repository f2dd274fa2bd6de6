"""The VAE (vae_cli/models/vae.py): the closed-form KL and the reparameterisation."""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae_cli.config import LossConfig, ModelConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.models.vae import gaussian_kl


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


def test_reparameterisation_draws_from_q() -> None:
    mu, logvar = torch.full((200_000, 1), 2.0), torch.full((200_000, 1), math.log(0.25))
    z = create_model(
        ModelConfig(name="mlp"), (1, 2, 2), 1, create_likelihood(LossConfig(name="bernoulli"))
    ).reparameterize(mu, logvar)
    assert abs(z.mean() - 2.0) < 0.01
    assert abs(z.std() - 0.5) < 0.01
