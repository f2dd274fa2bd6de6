"""Fully connected encoder and decoder: flatten -> hidden_dims -> code, and the mirror image back."""

from __future__ import annotations

import math

from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.models.registry import MODELS, activation


def _mlp(sizes: list[int], act: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), activation(act)]
    return layers


@MODELS.register("mlp")
def build_mlp(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    c, h, w = image_shape
    hidden = list(cfg.hidden_dims)
    encoder = nn.Sequential(
        nn.Flatten(),
        *_mlp([math.prod(image_shape), *hidden], cfg.activation),
        nn.Linear(hidden[-1], 2 * latent_dim),
    )
    decoder = nn.Sequential(
        *_mlp([latent_dim, *reversed(hidden)], cfg.activation),
        nn.Linear(hidden[0], out_channels * h * w),
        nn.Unflatten(1, (out_channels, h, w)),
    )
    return encoder, decoder
