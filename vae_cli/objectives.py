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
from typing import Any, NamedTuple

import torch

from vae_cli.models import VAE, VAEOutput
from vae_cli.models.vae import gaussian_kl
from vae_cli.registry import Registry


class Terms(NamedTuple):
    recon: torch.Tensor  # (N,) -log p(x|z), averaged over the draws of z
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z)), closed form
    kl_per_dim: torch.Tensor  # (N, latent_dim)
    bound: torch.Tensor | None = None  # (N,) the importance-weighted bound, when that is the objective

    def loss(self, beta: float, free_bits: float = 0.0, trim: float = 0.0) -> torch.Tensor:
        """The training loss, averaged over the batch.

        ELBO: recon + beta * KL; with free bits (Kingma et al. 2016), each latent dimension's KL, averaged
        over the batch, counts as at least `free_bits` nats, so the loss never pushes it below that floor.
        IWAE: -IWAE_k, with beta already inside the importance weights.

        `trim` > 0 (robust training, `train.trim`): the examples with the highest loss, that share of the
        batch, are left out of the average (a trimmed mean), so outliers among the training data give no
        gradient: the model does not learn to explain them."""
        if trim > 0 and len(self.recon) > 1:
            per_example = -self.bound if self.bound is not None else self.recon + beta * self.kl
            keep = max(1, round(len(per_example) * (1 - trim)))
            kept = torch.topk(per_example.detach(), keep, largest=False).indices
            picked = (t[kept] if t is not None else None for t in self)
            return Terms(*picked).loss(beta, free_bits)
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


#: name (`objective=<name>`) -> objective(model, x, cfg, beta, target=, generator=, forward=) -> Terms;
#: `cfg` is the objective's own config section (its schema in vae_cli/config), read once per epoch
OBJECTIVES: Registry = Registry("objective")


@OBJECTIVES.register("elbo")
def elbo_objective(model: VAE, x: torch.Tensor, cfg: Any, beta: float, **draw: Any) -> Terms:
    """The (beta-weighted) ELBO; beta enters through `Terms.loss`. `draw`: target, generator, forward."""
    return elbo_terms(model, x, **draw)


@OBJECTIVES.register("iwae")
def iwae_objective(model: VAE, x: torch.Tensor, cfg: Any, beta: float, **draw: Any) -> Terms:
    """The importance-weighted bound with `cfg.k` draws; beta enters through its importance weights."""
    return iwae_terms(model, x, cfg.k, beta, **draw)


def beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """beta ramps linearly from 0 to its value over `warmup_steps` optimisation steps (KL warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
