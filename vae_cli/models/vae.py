"""The VAE: an encoder of x into the parameters (mu, logvar) of a diagonal Gaussian, a posterior q(z|x)
built on them (vae_cli/models/posteriors.py), a prior p(z) (vae_cli/models/priors.py) and a decoder p(x|z).

For posterior=categorical the encoder's two halves are (logits, unused) instead.

The Gaussian posterior with the standard prior keeps its closed-form path: the reparameterised draw and
the closed-form KL, nothing else (the tuned CPU step). Every other pair draws through the posterior and
scores its draws under both densities, so the objectives estimate the KL by log q(z|x) - log p(z).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vae_cli.likelihoods import Likelihood
from vae_cli.models.posteriors import GaussianPosterior, Posterior, gaussian_kl
from vae_cli.models.priors import Prior, StandardPrior

__all__ = ["VAE", "VAEOutput", "gaussian_kl"]


class VAEOutput(NamedTuple):
    params: torch.Tensor  # the likelihood's parameters for x, e.g. Bernoulli logits (samples * N rows)
    mu: torch.Tensor  # the encoder's Gaussian (N, d): the posterior's parameters with logvar
    logvar: torch.Tensor
    z: torch.Tensor  # (N, d) for one draw per example, else (samples, N, d)
    log_q: torch.Tensor | None = None  # (samples, N) log q(z|x) of the draws, when computed
    log_p: torch.Tensor | None = None  # (samples, N) log p(z) of the draws, when computed
    kl_per_dim: torch.Tensor | None = None  # (N, d) KL(q || p) in closed form, where one exists


class VAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        prior: Prior | None = None,
        posterior: Posterior | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder  # x -> (N, 2 * latent_dim): [mu, logvar]
        self.decoder = decoder  # z -> likelihood parameters (N, P * C, H, W)
        self.likelihood = likelihood
        self.prior = prior if prior is not None else StandardPrior(latent_dim)
        self.posterior = posterior if posterior is not None else GaussianPosterior()
        self.latent_dim = latent_dim
        self.image_shape = image_shape

    @property
    def closed_form(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form: the Gaussian posterior with the standard prior."""
        return self.posterior.gaussian and self.prior.standard

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's Gaussian (mu, logvar), each (N, d): the posterior's parameters."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior's mean code of x (N, d): what reconstruction, traversals and probes use."""
        return self.posterior.mean(self.encode(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        # z = mu + sigma * eps, eps ~ N(0, I): a differentiable draw from q(z|x).
        if generator is None:
            eps = torch.randn_like(mu)  # (also what torch.compile traces: it has no generator)
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        samples: int = 1,
        densities: bool = False,
    ) -> VAEOutput:
        """Encode, draw `samples` codes per example and decode them. With samples > 1 (the importance-
        weighted objective), z is (samples, N, latent_dim) and params hold samples * N decodings.
        log q and log p of the draws are computed when `densities` asks or no closed-form KL exists.
        samples=0 draws nothing: z is the posterior's mean code, with no KL (the plain autoencoder)."""
        mu, logvar = self.encode(x)
        if samples == 0:
            z = self.posterior.mean((mu, logvar))
            return VAEOutput(self.decode(z), mu, logvar, z)
        if self.closed_form and not densities and samples == 1:  # the tuned path
            z = self.reparameterize(mu, logvar, generator)
            return VAEOutput(self.decode(z), mu, logvar, z, kl_per_dim=gaussian_kl(mu, logvar))
        z, log_q = self.posterior.rsample((mu, logvar), samples, generator)
        log_p = self.prior.log_prob(z)
        kl = self.posterior.kl((mu, logvar), self.prior)
        params = self.decode(z.flatten(0, 1))
        return VAEOutput(params, mu, logvar, z if samples > 1 else z[0], log_q, log_p, kl)

    def kl_per_dim(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL per latent dimension (N, d), closed form: KL(q(z_j|x) || N(0, 1)). With a prior or a
        posterior that does not factorise over dimensions (a mixture, a flow) it is that of the encoder's
        Gaussian, before any flow, to N(0, 1): which dimensions carry information, not a split of the KL.
        posterior=categorical: its own closed form, each variable's KL to the uniform prior split equally
        over its K code values (it sums to the KL)."""
        if self.posterior.discrete:
            return self.posterior.kl((mu, logvar), self.prior)
        return gaussian_kl(mu, logvar)

    def at_step(self, step: int) -> None:
        """The training loop's call before optimisation step `step`: the posterior's schedule (the
        categorical posterior's annealed temperature) follows it."""
        self.posterior.at_step(step)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decode n codes from the prior (each Gaussian's spread scaled by `temperature`); returns the
        likelihood's mean images."""
        return self.likelihood.mean(self.decode(self.prior_codes(n, temperature, generator)))

    def prior_codes(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n codes z ~ p(z), (n, d), on the model's device."""
        return self.prior.sample(n, generator, temperature).to(next(self.parameters()).device)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior's mean code: the deterministic reconstruction used for inference."""
        return self.likelihood.mean(self.decode(self.code(x)))
