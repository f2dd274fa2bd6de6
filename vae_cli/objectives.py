"""The objectives, per example, in nats: the (beta-weighted) evidence lower bound and the
importance-weighted bound.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I))
    loss    = recon + beta * KL,   recon = -E_q[log p(x|z)]   (one reparameterised sample of z)

    IWAE_k(x) = E[log (1/k) sum_i w_i],  log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)   (Burda et al.)

Every term is summed over data (or latent) dimensions and averaged over the batch, so numbers are nats
per example and compare with papers. beta = 1 is the ELBO; there are no hidden scaling constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from vae_cli.models import VAE, VAEOutput


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per latent dimension, in closed form:
    0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class Terms(NamedTuple):
    recon: torch.Tensor  # (N,) -log p(x|z), averaged over the draws of z
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z)), closed form
    kl_per_dim: torch.Tensor  # (N, latent_dim)
    bound: torch.Tensor | None = None  # (N,) the importance-weighted bound, when that is the objective

    def loss(self, beta: float, free_bits: float = 0.0) -> torch.Tensor:
        """The training loss, averaged over the batch.

        ELBO: recon + beta * KL; with free bits (Kingma et al. 2016), each latent dimension's KL, averaged
        over the batch, counts as at least `free_bits` nats, so the loss never pushes it below that floor.
        IWAE: -IWAE_k, with beta already inside the importance weights."""
        if self.bound is not None:
            return -self.bound.mean()
        kl = self.kl.mean() if free_bits <= 0 else self.kl_per_dim.mean(0).clamp(min=free_bits).sum()
        return self.recon.mean() + beta * kl


def elbo_terms(
    model: VAE,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The ELBO's terms for inputs x; `target` (default x) is what the likelihood scores. `forward` runs
    the model's forward pass when it is wrapped (torch.compile, DistributedDataParallel)."""
    out = (model if forward is None else forward)(x, generator)
    recon = model.likelihood.nll(out.params, x if target is None else target)
    kl_per_dim = gaussian_kl(out.mu, out.logvar)
    return Terms(recon, kl_per_dim.sum(1), kl_per_dim)


def iwae_terms(
    model: VAE,
    x: torch.Tensor,
    k: int,
    beta: float = 1.0,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The importance-weighted bound with k draws, differentiable, for training (Burda et al. 2015):

        log w_i = log p(x|z_i) + beta * (log p(z_i) - log q(z_i|x)),   bound = logsumexp_i log w_i - log k

    At k = 1 it is the ELBO with a one-sample estimate of the KL; beta = 1 gives the IWAE bound."""
    target = x if target is None else target
    out = (model if forward is None else forward)(x, generator, k)
    z = out.z if k > 1 else out.z.unsqueeze(0)  # (k, N, latent)
    log_px_z = model.likelihood.log_prob(out.params.view(k, len(x), *out.params.shape[1:]), target)
    mu, logvar = out.mu.float(), out.logvar.float()
    eps = (z.float() - mu) * torch.exp(-0.5 * logvar)
    # log N(z; 0, I) - log N(z; mu, sigma^2): the log(2 pi) terms cancel.
    log_ratio = -0.5 * (z.float().pow(2) - eps.pow(2) - logvar).sum(-1)
    bound = torch.logsumexp(log_px_z + beta * log_ratio, dim=0) - math.log(k)
    kl_per_dim = gaussian_kl(mu, logvar)
    return Terms(-log_px_z.mean(0), kl_per_dim.sum(1), kl_per_dim, bound)


def objective_terms(
    name: str,
    model: VAE,
    x: torch.Tensor,
    k: int = 1,
    beta: float = 1.0,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The terms of the configured objective (`objective.name`): the ELBO, or the IWAE bound with k draws
    (beta enters the ELBO through `Terms.loss`, the IWAE bound through its importance weights)."""
    if name == "iwae":
        return iwae_terms(model, x, k, beta, target, generator, forward)
    return elbo_terms(model, x, target, generator, forward)


def beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """beta ramps linearly from 0 to its value over `warmup_steps` optimisation steps (KL warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


#: decoded values (draws x examples x pixels) per pass of the importance-weighted bound, 16 MB in float32:
#: big enough for fast matrix products, small enough that the allocator reuses memory instead of asking
#: the OS for fresh pages every pass (measured: 2x faster on CPU than 64 MB passes)
VALUES_PER_PASS = 1 << 22


class ImportanceEstimate(NamedTuple):
    """Per-example estimates, in nats, from the same k draws z_i ~ q(z|x)."""

    log_px: torch.Tensor  # (N,) IWAE_k = log (1/k) sum_i w_i, a lower bound on log p(x) that tightens with k
    log_px_given_z: torch.Tensor  # (N,) (1/k) sum_i log p(x|z_i): minus the ELBO's reconstruction term
    log_prior_ratio: torch.Tensor  # (N,) (1/k) sum_i log p(z_i) - log q(z_i|x): minus the KL, sampled

    @property
    def elbo(self) -> torch.Tensor:
        """(1/k) sum_i log w_i: the ELBO, never above `log_px` (Jensen's inequality, same draws)."""
        return self.log_px_given_z + self.log_prior_ratio


@torch.inference_mode()
def importance_weighted_bound(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> ImportanceEstimate:
    """The importance-weighted bound of Burda et al. (2015) on log p(x), per example, in nats:

        log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),   z_i ~ q(z|x),  i = 1..k
        IWAE_k  = logsumexp_i(log w_i) - log k  <=  log p(x)

    x is encoded once; the k draws are decoded `chunk` at a time as one (chunk * N)-row batch, so
    memory stays bounded whatever k is. `chunk` defaults to about VALUES_PER_PASS decoded values a pass."""
    n = len(x)
    chunk = max(1, min(k, chunk or VALUES_PER_PASS // max(1, n * math.prod(x.shape[1:]))))
    mu, logvar = model.encode(x)
    mu, logvar = mu.float(), logvar.float()
    std = torch.exp(0.5 * logvar)
    log_w, log_px_z = [], []
    for start in range(0, k, chunk):
        s = min(chunk, k - start)
        eps = torch.randn((s, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps  # (s, N, latent)
        params = model.decode(z.flatten(0, 1))
        lp_x_z = model.likelihood.log_prob(params.view(s, len(x), *params.shape[1:]), x)  # (s, N)
        # log p(z) - log q(z|x) for N(0, I) and N(mu, sigma^2): the log(2 pi) terms cancel.
        ratio = -0.5 * (z.pow(2) - eps.pow(2) - logvar).sum(-1)
        log_w.append(lp_x_z + ratio)
        log_px_z.append(lp_x_z)
    log_w_all = torch.cat(log_w)  # (k, N)
    log_px = torch.logsumexp(log_w_all.double(), dim=0) - math.log(k)
    mean_log_px_z = torch.cat(log_px_z).double().mean(0)
    return ImportanceEstimate(log_px, mean_log_px_z, log_w_all.double().mean(0) - mean_log_px_z)


def iwae_log_likelihood(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """IWAE_k estimate of log p(x) per example (N,), in nats; see `importance_weighted_bound`."""
    return importance_weighted_bound(model, x, k, chunk, generator).log_px
