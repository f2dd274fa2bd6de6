"""The approximate posteriors q(z|x), registered by name (`posterior=<name>`).

The encoder maps x to the parameters of a diagonal Gaussian, (mu, logvar) = h; a posterior turns h into

    rsample(h, k, generator) -> z (k, N, d), log q(z|x) (k, N)   reparameterised draws and their density
    mean(h) -> (N, d)                                            the code used to reconstruct, traverse, probe
    kl(h, prior) -> (N, d) or None                               KL(q || p) per dimension, where closed form

Every draw comes from `generator` when one is given (evaluation is seeded); without one (training, and
what torch.compile traces), from the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vae_cli.registry import Registry

LOG_2PI = math.log(2 * math.pi)

#: name -> builder(cfg, latent_dim) -> Posterior
POSTERIORS: Registry[Callable[..., Posterior]] = Registry("posterior")

Params = tuple[torch.Tensor, torch.Tensor]  # (mu, logvar), each (N, d)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per latent dimension, in closed form:
    0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def standard_normal(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """eps ~ N(0, I) of `shape`, on `like`'s device and dtype, from `generator` (None: the global RNG)."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def gaussian_draws(
    mu: torch.Tensor, logvar: torch.Tensor, k: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """k draws z = mu + sigma * eps of N(mu, diag(sigma^2)), (k, N, d), and their log density (k, N):
    log q(z) = -0.5 * sum_j (eps_j^2 + log sigma_j^2 + log 2 pi)."""
    mu, logvar = mu.float(), logvar.float()
    eps = standard_normal((k, *mu.shape), mu, generator)
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
    return z, log_q


class Posterior(nn.Module):
    """q(z|x) from the encoder's (mu, logvar)."""

    #: True for the diagonal Gaussian itself: with the standard prior, the model takes the closed-form path
    gaussian: bool = False

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def mean(self, h: Params) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, h: Params, prior: nn.Module) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per dimension (N, d) where it has a closed form; else None, and the
        objectives use the Monte Carlo estimate log q(z|x) - log p(z) on the draws."""
        return None


class GaussianPosterior(Posterior):
    """N(mu(x), diag(sigma^2(x))): the reparameterised draw; KL to N(0, I) in closed form."""

    gaussian = True

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_draws(*h, k, generator)

    def mean(self, h: Params) -> torch.Tensor:
        return h[0]

    def kl(self, h: Params, prior: nn.Module) -> torch.Tensor | None:
        return gaussian_kl(*h) if getattr(prior, "standard", False) else None


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class IafStep(nn.Module):
    """One inverse autoregressive flow step (Kingma et al. 2016, their numerically stable form):

        [m, s] = MADE(z, h),  sigma = sigmoid(s),  z' = sigma * z + (1 - sigma) * m,
        log |det dz'/dz| = sum_j log sigma_j

    m_j and s_j depend on z_<j only (and on the context h), so the Jacobian is triangular with diagonal
    sigma. The context h = [mu, log sigma^2] of the Gaussian (not z) enters unmasked."""

    def __init__(self, latent_dim: int, hidden: int, context_dim: int) -> None:
        super().__init__()
        d = latent_dim
        # MADE degrees: input j has degree j + 1, hidden units cycle through 1..d-1, output j has j + 1;
        # a unit sees an input of lower-or-equal degree, an output sees hidden units of strictly lower degree
        inputs = torch.arange(1, d + 1)
        units = torch.arange(hidden) % max(1, d - 1) + 1
        self.hidden = MaskedLinear(d, hidden, (units[:, None] >= inputs[None, :]))
        self.out = MaskedLinear(hidden, 2 * d, (inputs.repeat(2)[:, None] > units[None, :]))
        self.context_hidden = nn.Linear(context_dim, hidden)
        self.context_out = nn.Linear(context_dim, 2 * d)  # z_1's m and s depend on h alone
        self.act = nn.ELU()
        # start near the identity: sigma = sigmoid(s) close to 1 (the paper's forget-gate bias)
        nn.init.constant_(self.context_out.bias[d:], 2.0)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z' and log |det dz'/dz| (z's leading shape)."""
        hidden = self.act(self.hidden(z) + self.context_hidden(h))
        m, s = (self.out(hidden) + self.context_out(h)).chunk(2, dim=-1)
        log_sigma = nn.functional.logsigmoid(s)
        sigma = log_sigma.exp()
        return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)


class IafPosterior(Posterior):
    """The Gaussian's draw z0 through `steps` IAF steps, the order of the dimensions reversed between
    steps: log q(z_T|x) = log N(z0; mu, sigma^2) - sum_t log |det dz_t/dz_{t-1}|, exact. No closed-form KL."""

    def __init__(self, latent_dim: int, steps: int, hidden: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(IafStep(latent_dim, hidden, 2 * latent_dim) for _ in range(steps))

    def flow(self, z: torch.Tensor, h: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """z0 (..., N, d) through every step: (z_T, the summed log |det| (..., N))."""
        context = torch.cat([t.float() for t in h], dim=-1).expand(*z.shape[:-1], -1)
        log_det = z.new_zeros(z.shape[:-1])
        for i, step in enumerate(self.steps):
            if i:
                z = z.flip(-1)  # each step conditions on the other order
            z, ld = step(z, context)
            log_det = log_det + ld
        if len(self.steps) % 2 == 0:
            z = z.flip(-1)  # back to the dimensions' own order (an odd count ends in it already)
        return z, log_det

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z0, log_q0 = gaussian_draws(*h, k, generator)
        z, log_det = self.flow(z0, h)
        return z, log_q0 - log_det

    def mean(self, h: Params) -> torch.Tensor:
        """The flow's image of the Gaussian's mean (E[z|x] has no closed form): z_T at eps = 0."""
        return self.flow(h[0].float(), h)[0]


@POSTERIORS.register("gaussian")
def build_gaussian(cfg: object, latent_dim: int) -> Posterior:
    return GaussianPosterior()


@POSTERIORS.register("iaf")
def build_iaf(cfg: object, latent_dim: int) -> Posterior:
    return IafPosterior(latent_dim, cfg.steps, cfg.hidden)
