"""The objectives, per example, in nats: the (beta-weighted) evidence lower bound and the
importance-weighted bound.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
    loss    = recon + beta * KL,   recon = -E_q[log p(x|z)]   (one reparameterised sample of z)
    KL      in closed form for the Gaussian posterior and the standard prior, else the Monte Carlo
            estimate log q(z|x) - log p(z) on the same draw

    IWAE_k(x) = E[log (1/k) sum_i w_i],  log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)   (Burda et al.)

Every term is summed over data (or latent) dimensions and averaged over the batch, so numbers are nats
per example and compare with papers. beta = 1 is the ELBO; there are no hidden scaling constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch

from vae_cli.likelihoods import Likelihood
from vae_cli.models import VAE, VAEOutput
from vae_cli.registry import Registry


class Terms(NamedTuple):
    recon: torch.Tensor  # (N,) -log p(x|z), averaged over the draws of z
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z)): closed form, else estimated on the draws of z
    kl_per_dim: torch.Tensor | None  # (N, latent_dim) where the KL has a closed form, else None
    bound: torch.Tensor | None = None  # (N,) the importance-weighted bound, when that is the objective
    latent_dims: int = 0  # d: free bits without a KL per dimension floor the whole KL at d * free_bits

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
            picked = (t[kept] if isinstance(t, torch.Tensor) else t for t in self)
            return Terms(*picked).loss(beta, free_bits)
        if self.bound is not None:
            return -self.bound.mean()
        if free_bits <= 0:
            kl = self.kl.mean()
        elif self.kl_per_dim is not None:
            kl = self.kl_per_dim.mean(0).clamp(min=free_bits).sum()
        else:  # no KL per dimension (a mixture prior, a flow): the latent as one group of free bits
            kl = self.kl.mean().clamp(min=free_bits * self.latent_dims)
        return self.recon.mean() + beta * kl


class Objective(NamedTuple):
    """A training objective: `terms(out, target, likelihood, cfg, beta) -> Terms`, a pure function of the
    model's output, and how that output must be drawn for it: `samples(cfg)` codes per example, and
    whether it reads log q and log p of the draws (`densities`) even where the KL has a closed form."""

    terms: Callable[[VAEOutput, torch.Tensor, Likelihood, Any, float], Terms]
    samples: Callable[[Any], int]
    densities: bool

    def __call__(
        self,
        model: VAE,
        x: torch.Tensor,
        cfg: Any,
        beta: float,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        forward: Callable[..., VAEOutput] | None = None,
    ) -> Terms:
        """The terms for inputs x; `target` (default x) is what the likelihood scores. `forward` runs the
        model's forward pass when it is wrapped (torch.compile, DistributedDataParallel)."""
        out = (model if forward is None else forward)(x, generator, self.samples(cfg), self.densities)
        return self.terms(out, x if target is None else target, model.likelihood, cfg, beta)


def sampled_kl(out: VAEOutput) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example (N,): the closed form where the model gives one, else the Monte Carlo
    estimate (1/k) sum_i log q(z_i|x) - log p(z_i) on the draws."""
    if out.kl_per_dim is not None:
        return out.kl_per_dim.sum(1)
    return (out.log_q - out.log_p).mean(0)


def elbo(out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float) -> Terms:
    """The (beta-weighted) ELBO's terms; beta enters through `Terms.loss`."""
    recon = likelihood.nll(out.params, target)
    return Terms(recon, sampled_kl(out), out.kl_per_dim, latent_dims=out.z.shape[-1])


def iwae(out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float) -> Terms:
    """The importance-weighted bound with k = out's draws, differentiable, for training (Burda et al. 2015):

        log w_i = log p(x|z_i) + beta * (log p(z_i) - log q(z_i|x)),   bound = logsumexp_i log w_i - log k

    At k = 1 it is the ELBO with a one-sample estimate of the KL; beta = 1 gives the IWAE bound."""
    k, n = out.log_q.shape
    log_px_z = likelihood.log_prob(out.params.view(k, n, *out.params.shape[1:]), target)
    bound = torch.logsumexp(log_px_z + beta * (out.log_p - out.log_q), dim=0) - math.log(k)
    return Terms(-log_px_z.mean(0), sampled_kl(out), out.kl_per_dim, bound, out.z.shape[-1])


#: name (`objective=<name>`) -> Objective; called as objective(model, x, cfg, beta, target=, generator=,
#: forward=) -> Terms, with `cfg` the objective's own config section (its schema in vae_cli/config), read
#: once per epoch
OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.register("elbo")(Objective(elbo, lambda cfg: 1, densities=False))
OBJECTIVES.register("iwae")(Objective(iwae, lambda cfg: cfg.k, densities=True))


def elbo_terms(
    model: VAE,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The ELBO's terms for inputs x (see `Objective.__call__` for the keywords)."""
    return OBJECTIVES.get("elbo")(model, x, None, 1.0, target=target, generator=generator, forward=forward)


def iwae_terms(
    model: VAE,
    x: torch.Tensor,
    k: int,
    beta: float = 1.0,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The importance-weighted bound's terms with k draws (see `iwae`)."""
    cfg = SimpleNamespace(k=k)
    return OBJECTIVES.get("iwae")(model, x, cfg, beta, target=target, generator=generator, forward=forward)


def beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """beta ramps linearly from 0 to its value over `warmup_steps` optimisation steps (KL warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
