"""The VAE: an encoder q(z|x) = N(mu(x), diag(sigma^2(x))), a decoder p(x|z) and the prior N(0, I)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vae_cli.likelihoods import Likelihood


class VAEOutput(NamedTuple):
    params: torch.Tensor  # the likelihood's parameters for x, e.g. Bernoulli logits
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


class VAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.encoder = encoder  # x -> (N, 2 * latent_dim): [mu, logvar]
        self.decoder = decoder  # z -> likelihood parameters (N, P * C, H, W)
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.image_shape = image_shape

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

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
        self, x: torch.Tensor, generator: torch.Generator | None = None, samples: int = 1
    ) -> VAEOutput:
        """Encode, draw `samples` codes per example and decode them. With samples > 1 (the importance-
        weighted objective), z is (samples, N, latent_dim) and params hold samples * N decodings."""
        mu, logvar = self.encode(x)
        if samples == 1:
            z = self.reparameterize(mu, logvar, generator)
            return VAEOutput(self.decode(z), mu, logvar, z)
        z = self.reparameterize(
            mu.expand(samples, *mu.shape), logvar.expand(samples, *logvar.shape), generator
        )
        return VAEOutput(self.decode(z.flatten(0, 1)), mu, logvar, z)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decode n codes from the prior (scaled by `temperature`); returns the likelihood's mean images."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode z = mu(x): the deterministic reconstruction used for inference."""
        mu, _ = self.encode(x)
        return self.likelihood.mean(self.decode(mu))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per latent dimension, in closed form:
    0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
