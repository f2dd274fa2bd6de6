"""The objective: the (beta-weighted) evidence lower bound, per example, in nats.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I))
    loss    = recon + beta * KL,   recon = -E_q[log p(x|z)]   (one reparameterised sample of z)

Every term is summed over data (or latent) dimensions and averaged over the batch, so numbers are nats
per example and compare with papers. beta = 1 is the ELBO; there are no hidden scaling constants.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vae_cli.models import VAE


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per latent dimension, in closed form:
    0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class Terms(NamedTuple):
    recon: torch.Tensor  # (N,) -log p(x|z), one sample of z
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z))
    kl_per_dim: torch.Tensor  # (N, latent_dim)

    def loss(self, beta: float) -> torch.Tensor:
        """recon + beta * KL, averaged over the batch."""
        return (self.recon + beta * self.kl).mean()


def elbo_terms(
    model: VAE, x: torch.Tensor, target: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> Terms:
    """The ELBO's terms for inputs x; `target` (default x) is what the likelihood scores."""
    out = model(x, generator)
    recon = -model.likelihood.log_prob(out.params, x if target is None else target)
    kl_per_dim = gaussian_kl(out.mu, out.logvar)
    return Terms(recon, kl_per_dim.sum(1), kl_per_dim)


def beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """beta ramps linearly from 0 to its value over `warmup_steps` optimisation steps (KL warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
