"""Residual convolutional encoder and decoder, sized from the image shape like `conv`.

Each stage is a residual block (GroupNorm, SiLU, 3x3 conv, twice, plus a skip connection) and a
stride-2 (transposed) convolution. GroupNorm normalises each example on its own, so nothing leaks
across the batch and evaluation behaves exactly like training (unlike BatchNorm).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from vae_cli.config import ModelConfig
from vae_cli.models.conv import stride2_layout
from vae_cli.models.registry import MODELS, activation


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in),
            activation(act),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out),
            activation(act),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


@MODELS.register("resnet")
def build_resnet(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    layout = stride2_layout(cfg, image_shape)
    k, pad, widths = layout.kernel, layout.pad, layout.widths
    flat = math.prod(layout.code_shape)

    enc: list[nn.Module] = [nn.Conv2d(image_shape[0], widths[0], 3, padding=1)]
    for c_in, c_out in zip([widths[0], *widths[:-1]], widths, strict=True):
        enc += [ResBlock(c_in, c_out, cfg.activation), nn.Conv2d(c_out, c_out, k, 2, pad)]
    enc += [_norm(widths[-1]), activation(cfg.activation), nn.Flatten(), nn.Linear(flat, 2 * latent_dim)]

    dec: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.Unflatten(1, layout.code_shape)]
    rev = list(reversed(widths))
    for i, c_in in enumerate(rev):
        c_out = rev[i + 1] if i + 1 < len(rev) else widths[0]
        dec += [
            ResBlock(c_in, c_out, cfg.activation),
            nn.ConvTranspose2d(c_out, c_out, k, 2, pad, output_padding=layout.output_padding(i)),
        ]
    dec += [_norm(widths[0]), activation(cfg.activation), nn.Conv2d(widths[0], out_channels, 3, padding=1)]
    return nn.Sequential(*enc), nn.Sequential(*dec)
