"""Fully connected encoder and decoder: flatten -> hidden_dims -> code, and the mirror image back."""

from __future__ import annotations

import math

from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.config.auto import hidden_dims_default
from vae_cli.models.registry import MODELS, activation


def _mlp(sizes: list[int], act: str, dropout: float = 0.0) -> list[nn.Module]:
    """Linear layers, each followed by the activation (and by dropout when it is > 0; without it the
    layers, and so a checkpoint's state_dict keys, are those of the models from before dropout)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


@MODELS.register("mlp")
def build_mlp(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    c, h, w = image_shape
    # null (auto) keys are resolved by `vae train` (vae_cli/config/auto.py); a config built in Python may
    # still hold them: the same defaults then
    hidden = list(cfg.hidden_dims) if cfg.hidden_dims is not None else hidden_dims_default(image_shape)
    dropout = getattr(cfg, "dropout", None) or 0.0
    encoder = nn.Sequential(
        nn.Flatten(),
        *_mlp([math.prod(image_shape), *hidden], cfg.activation, dropout),
        nn.Linear(hidden[-1], 2 * latent_dim),
    )
    decoder = nn.Sequential(
        *_mlp([latent_dim, *reversed(hidden)], cfg.activation, dropout),
        nn.Linear(hidden[0], out_channels * h * w),
        nn.Unflatten(1, (out_channels, h, w)),
    )
    return encoder, decoder
