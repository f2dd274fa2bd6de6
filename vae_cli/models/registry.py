from __future__ import annotations

from typing import Any

from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import Likelihood
from vae_cli.models.posteriors import POSTERIORS
from vae_cli.models.priors import PRIORS
from vae_cli.models.vae import VAE
from vae_cli.registry import Registry

#: name -> builder(cfg, image_shape, latent_dim, out_channels) -> (encoder, decoder)
MODELS: Registry = Registry("model")

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation={name} is invalid: choose one of {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]()


def create_model(
    cfg: ModelConfig,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    likelihood: Likelihood,
    prior: Any = None,
    posterior: Any = None,
) -> VAE:
    """Build the VAE for images of `image_shape` (C, H, W), with the `prior` and `posterior` their config
    sections name (None: prior=standard, posterior=gaussian, as before those groups existed)."""
    if cfg.name == "auto":
        raise ConfigError(
            "model=auto is picked from the data (vae_cli.config.auto.resolve_auto, as vae train does): "
            f"choose one of {', '.join(MODELS.names())}"
        )
    if cfg.name != "mlp" and image_shape[1] == 1 and image_shape[2] > 1:
        raise ConfigError(
            f"model={cfg.name} needs images; this data holds vectors of {image_shape[2]} features: "
            f"use model=mlp"
        )
    out_channels = likelihood.param_channels * image_shape[0]
    encoder, decoder = MODELS.get(cfg.name)(cfg, tuple(image_shape), latent_dim, out_channels)
    prior_name = prior.name if prior is not None else "standard"
    posterior_name = posterior.name if posterior is not None else "gaussian"
    return VAE(
        encoder,
        decoder,
        likelihood,
        latent_dim,
        tuple(image_shape),
        PRIORS.get(prior_name)(prior, latent_dim, tuple(image_shape), encoder),
        POSTERIORS.get(posterior_name)(posterior, latent_dim),
    )
