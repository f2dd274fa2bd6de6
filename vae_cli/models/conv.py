"""Convolutional encoder (strided convs) and decoder (transposed convs) sized from the image shape.

Each encoder layer halves the spatial size (kernel k, stride 2, padding (k - 1) // 2, rounded down);
the decoder retraces the recorded sizes exactly, with `output_padding` absorbing odd sizes, so 28x28,
64x64 and any other size work without hard-wired shapes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.errors import ConfigError
from vae_cli.models.registry import MODELS, activation


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def stride2_sizes(h: int, w: int, widths: list[int], k: int, pad: int) -> list[tuple[int, int]]:
    """The spatial size before and after each stride-2 layer; a ConfigError when the image is too small."""
    sizes = [(h, w)]
    for _ in widths:
        sh, sw = sizes[-1]
        sizes.append((_conv_out(sh, k, 2, pad), _conv_out(sw, k, 2, pad)))
    if min(sizes[-1]) < 1:
        raise ConfigError(
            f"model.channels has {len(widths)} stride-2 layers, too many for {h}x{w} images: "
            f"use fewer, e.g. model.channels=[{','.join(map(str, widths[:-1]))}]"
        )
    return sizes


class Stride2Layout(NamedTuple):
    """The geometry of a stack of stride-2 layers, one per entry of model.channels."""

    kernel: int
    pad: int
    widths: list[int]
    sizes: list[tuple[int, int]]  # the spatial size before the first layer and after each

    @property
    def code_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) after the last layer: what the code is flattened from."""
        return (self.widths[-1], *self.sizes[-1])

    def output_padding(self, i: int) -> tuple[int, int]:
        """The output_padding of the decoder's i-th transposed conv (retracing the encoder's last first)."""
        n = len(self.widths)
        return transposed_padding(self.sizes[n - i], self.sizes[n - i - 1], self.kernel, self.pad)


def stride2_layout(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> Stride2Layout:
    k = cfg.kernel_size
    pad = (k - 1) // 2
    widths = list(cfg.channels)
    return Stride2Layout(k, pad, widths, stride2_sizes(image_shape[1], image_shape[2], widths, k, pad))


def transposed_padding(
    size_in: tuple[int, int], target: tuple[int, int], k: int, pad: int
) -> tuple[int, int]:
    """The output_padding that makes a stride-2 transposed conv retrace `size_in` -> `target` exactly."""
    return tuple(t - ((i - 1) * 2 - 2 * pad + k) for i, t in zip(size_in, target, strict=True))


@MODELS.register("conv")
def build_conv(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    layout = stride2_layout(cfg, image_shape)
    k, pad, widths = layout.kernel, layout.pad, layout.widths
    flat = math.prod(layout.code_shape)

    enc: list[nn.Module] = []
    for c_in, c_out in zip([image_shape[0], *widths[:-1]], widths, strict=True):
        enc += [nn.Conv2d(c_in, c_out, k, 2, pad), activation(cfg.activation)]
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, 2 * latent_dim))

    dec: list[nn.Module] = [
        nn.Linear(latent_dim, flat),
        activation(cfg.activation),
        nn.Unflatten(1, layout.code_shape),
    ]
    rev = list(reversed(widths))
    for i, c_in in enumerate(rev):
        last = i == len(rev) - 1
        c_out = out_channels if last else rev[i + 1]
        dec.append(nn.ConvTranspose2d(c_in, c_out, k, 2, pad, output_padding=layout.output_padding(i)))
        if not last:
            dec.append(activation(cfg.activation))
    return encoder, nn.Sequential(*dec)
