"""Model architectures, registered by name; `create_model` joins an encoder, a decoder and a likelihood."""

from vae_cli.models.registry import MODELS, create_model
from vae_cli.models.vae import VAE, VAEOutput

# Importing the architecture modules registers them.
from vae_cli.models import conv, mlp, resnet  # noqa: E402,F401  isort: skip

__all__ = ["MODELS", "VAE", "VAEOutput", "create_model"]
