"""The priors p(z), registered by name (`prior=<name>`).

    log_prob(z) (..., d) -> (...)          log p(z), in nats
    sample(n, generator, temperature)      (n, d) codes; temperature scales each Gaussian's spread

prior=uniform, the uniform categorical prior, scores and draws the one-hot codes of posterior=categorical.

The mixtures' log densities are a logsumexp over their components of log pi_k + log N(z; m_k, s_k^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vae_cli.config.posteriors import UNIFORM_ONLY
from vae_cli.errors import ConfigError
from vae_cli.models.posteriors import LOG_2PI, standard_normal
from vae_cli.registry import Registry

#: name -> builder(cfg, latent_dim, image_shape, encoder) -> Prior; `encoder` maps x to (N, 2 * d)
PRIORS: Registry[Callable[..., Prior]] = Registry("prior")


def diagonal_gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))), summed over the last dimension (broadcasting)."""
    return -0.5 * ((z - mean).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def mixture_log_prob(
    z: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor
) -> torch.Tensor:
    """log sum_k w_k N(z; means_k, diag(exp(logvars_k))) for z (..., d) and K components: (...).

    Each component's quadratic form sum_j (z_j - m_kj)^2 / s_kj^2 is expanded into z^2 @ (1/s^2)^T -
    2 z @ (m/s^2)^T + sum_j m_kj^2 / s_kj^2: two matrix products instead of a (..., K, d) tensor (12x
    faster for a VampPrior's 100 components scored at an IWAE bound's draws; the float32 rounding it
    adds is below 1e-3 nats at log densities of hundreds)."""
    z = z.float()
    precision = torch.exp(-logvars)  # (K, d)
    quadratic = (z * z) @ precision.T - 2 * (z @ (means * precision).T)  # (..., K)
    constant = (means.pow(2) * precision + logvars + LOG_2PI).sum(-1)  # (K,)
    return torch.logsumexp(log_weights - 0.5 * (quadratic + constant), dim=-1)


def mixture_sample(
    n: int,
    log_weights: torch.Tensor,
    means: torch.Tensor,
    logvars: torch.Tensor,
    generator: torch.Generator | None,
    temperature: float,
) -> torch.Tensor:
    """n draws: a component k ~ Categorical(w), then z ~ N(means_k, temperature^2 exp(logvars_k))."""
    k = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
    eps = standard_normal((n, means.shape[-1]), means, generator)
    return means[k] + temperature * torch.exp(0.5 * logvars[k]) * eps


class Prior(nn.Module):
    """p(z) over latent_dim dimensions."""

    #: True for N(0, I): with the Gaussian posterior, the model takes the closed-form path
    standard: bool = False
    #: True for a prior of one-hot codes (prior=uniform): it serves posterior=categorical only
    categorical: bool = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        raise NotImplementedError

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class StandardPrior(Prior):
    """N(0, I)."""

    standard = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # knows its device and dtype

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.float().pow(2) + LOG_2PI).sum(-1)

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        like = self._anchor.float()
        return temperature * standard_normal((n, self.latent_dim), like, generator)


class UniformPrior(Prior):
    """The uniform categorical prior of posterior=categorical: N = d / K independent variables, each uniform
    over K classes, a code being their N one-hot blocks of K values:

        log p(z) = -N log K   for every one-hot code (a relaxed code is scored as the one it rounds to)

    K comes from the posterior it is paired with (`CategoricalPosterior.pair`). `temperature` has nothing
    to scale: a uniform categorical has no spread."""

    categorical = True

    def __init__(self, latent_dim: int, classes: int | None = None) -> None:
        super().__init__(latent_dim)
        self.classes = classes
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # knows its device

    @property
    def variables(self) -> int:
        if self.classes is None:
            raise ConfigError(UNIFORM_ONLY)
        return self.latent_dim // self.classes

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full(z.shape[:-1], -self.variables * math.log(self.classes), device=z.device)

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """n codes (n, d): each variable's class uniform, one-hot."""
        device = self._anchor.device
        classes = torch.randint(self.classes, (n, self.variables), generator=generator, device=device)
        return nn.functional.one_hot(classes, self.classes).float().flatten(1)


class MixturePrior(Prior):
    """A learned mixture of `components` diagonal Gaussians: sum_k pi_k N(z; m_k, diag(s_k^2)), with
    pi = softmax(logits). The means start spread as N(0, I) draws, the variances at 1, the weights equal."""

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__(latent_dim)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z, torch.log_softmax(self.logits, 0), self.means, self.logvars)

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        log_weights = torch.log_softmax(self.logits.float(), 0)
        return mixture_sample(n, log_weights, self.means, self.logvars, generator, temperature)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z|u_k), the encoder's Gaussian
    posteriors of K learned pseudo-inputs u_k in data space. With posterior=iaf the components are
    the Gaussians before the flow (the flow's density at an arbitrary z would need its inverse).

    Image pseudo-inputs are kept in [0, 1], the inputs' range, by a hardtanh, as in the paper; a table's
    (1-pixel rows) are unbounded. The encoder is held by reference, not as a submodule, so its weights
    appear once in the state_dict, under `encoder.`."""

    def __init__(
        self, latent_dim: int, pseudo_inputs: int, image_shape: tuple[int, int, int], encoder: nn.Module
    ) -> None:
        super().__init__(latent_dim)
        images = not (image_shape[1] == 1 and image_shape[2] > 1)
        start = 0.5 if images else 0.0
        self.pseudo_inputs = nn.Parameter(start + 0.05 * torch.randn(pseudo_inputs, *image_shape))
        self.bounded = images
        object.__setattr__(self, "encoder", encoder)  # a reference: deepcopy (EMA) maps it to the copy's

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The K components' means and log-variances (K, d), float32."""
        u = nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0) if self.bounded else self.pseudo_inputs
        mean, logvar = self.encoder(u).chunk(2, dim=1)
        return mean.float(), logvar.float()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        mean, logvar = self.components()
        uniform = torch.full((len(mean),), -math.log(len(mean)), device=mean.device)
        return mixture_log_prob(z, uniform, mean, logvar)

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        mean, logvar = self.components()
        uniform = torch.full((len(mean),), -math.log(len(mean)), device=mean.device)
        return mixture_sample(n, uniform, mean, logvar, generator, temperature)


@PRIORS.register("standard")
def build_standard(
    cfg: object, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module
) -> Prior:
    return StandardPrior(latent_dim)


@PRIORS.register("mog")
def build_mog(cfg: object, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module) -> Prior:
    return MixturePrior(latent_dim, cfg.components)


@PRIORS.register("vamp")
def build_vamp(cfg: object, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module) -> Prior:
    return VampPrior(latent_dim, cfg.pseudo_inputs, image_shape, encoder)


@PRIORS.register("uniform")
def build_uniform(
    cfg: object, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module
) -> Prior:
    return UniformPrior(latent_dim)  # its K: the paired posterior's (CategoricalPosterior.pair)
