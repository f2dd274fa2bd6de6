"""Model architectures, priors and posteriors, registered by name; `create_model` joins an encoder, a
decoder, a likelihood, a prior and a posterior."""

from vae_cli.models.posteriors import POSTERIORS, Posterior
from vae_cli.models.priors import PRIORS, Prior
from vae_cli.models.registry import MODELS, create_model
from vae_cli.models.vae import VAE, VAEOutput

# Importing the architecture modules registers them.
from vae_cli.models import conv, ladder, mlp, resnet, vqvae  # noqa: E402,F401  isort: skip

__all__ = ["MODELS", "POSTERIORS", "PRIORS", "VAE", "Posterior", "Prior", "VAEOutput", "create_model"]
