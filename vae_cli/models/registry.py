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
    classes: Any = None,
) -> VAE:
    """Build the VAE for images of `image_shape` (C, H, W), with the `prior` and `posterior` their config
    sections name (None: prior=standard, posterior=gaussian, as before those groups existed). `classes`
    (vae_cli.models.conditional.Classes, from the data or the checkpoint): model.conditional's labels."""
    if cfg.name == "auto":
        raise ConfigError(
            "model=auto is picked from the data (vae_cli.config.auto.resolve_auto, as vae train does): "
            f"choose one of {', '.join(MODELS.names())}"
        )
    dense = cfg.name == "mlp" or getattr(cfg, "form", None) == "mlp"  # (a ladder of dense blocks)
    if not dense and image_shape[1] == 1 and image_shape[2] > 1:
        raise ConfigError(
            f"model={cfg.name} needs images; this data holds vectors of {image_shape[2]} features: "
            f"use model=mlp"
        )
    out_channels = likelihood.param_channels * image_shape[0]
    likelihood.bind(tuple(image_shape))
    # --- model.conditional (vae_cli/models/conditional.py): the architecture built for [x, y] and [z, y]
    conditional = bool(getattr(cfg, "conditional", False))
    if conditional:
        from vae_cli.models.conditional import check_conditional, conditional_parts

        check_conditional(cfg, prior.name if prior is not None else "standard", classes)
        encoder, decoder, condition = conditional_parts(
            MODELS.get(cfg.name), cfg, tuple(image_shape), latent_dim, out_channels, classes, dense
        )
    else:
        encoder, decoder = MODELS.get(cfg.name)(cfg, tuple(image_shape), latent_dim, out_channels)
    # ---
    if (
        cfg.name == "vqvae"
    ):  # a sibling of the VAE: deterministic codes, its own code prior, no prior/posterior
        from vae_cli.models.vqvae import build_vqvae

        return build_vqvae(cfg, tuple(image_shape), likelihood, encoder, decoder)
    # a hierarchy (model=ladder): the registered prior and posterior serve its top layer of latent_dim
    join = getattr(decoder, "join", None)
    prior_name = prior.name if prior is not None else "standard"
    posterior_name = posterior.name if posterior is not None else "gaussian"
    p = PRIORS.get(prior_name)(
        prior, latent_dim, tuple(image_shape), encoder if join is None else encoder.top()
    )
    q = POSTERIORS.get(posterior_name)(posterior, latent_dim)
    p = q.pair(p)  # checked together (prior=uniform serves posterior=categorical only), and told its K
    if join is not None:
        p, q = join(p, q)
    if conditional:
        from vae_cli.models.conditional import ConditionalVAE

        return ConditionalVAE(condition, encoder, decoder, likelihood, p.latent_dim, tuple(image_shape), p, q)
    return VAE(encoder, decoder, likelihood, p.latent_dim, tuple(image_shape), p, q)
