"""Convolutional encoder (strided convs) and decoder (transposed convs) sized from the image shape.

Each encoder layer halves the spatial size (kernel k, stride 2, padding (k - 1) // 2, rounded down);
the decoder retraces the recorded sizes exactly, with `output_padding` absorbing odd sizes, so 28x28,
64x64 and any other size work without hard-wired shapes.
"""

from __future__ import annotations

from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.errors import ConfigError
from vae_cli.models.registry import MODELS, activation


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


@MODELS.register("conv")
def build_conv(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    c, h, w = image_shape
    k, stride = cfg.kernel_size, 2
    pad = (k - 1) // 2
    widths = list(cfg.channels)

    sizes = [(h, w)]
    for _ in widths:
        sh, sw = sizes[-1]
        sizes.append((_conv_out(sh, k, stride, pad), _conv_out(sw, k, stride, pad)))
    if min(sizes[-1]) < 1:
        raise ConfigError(
            f"model.channels has {len(widths)} stride-2 layers, too many for {h}x{w} images: "
            f"use fewer, e.g. model.channels=[{','.join(map(str, widths[:-1]))}]"
        )
    fh, fw = sizes[-1]
    flat = widths[-1] * fh * fw

    enc: list[nn.Module] = []
    for c_in, c_out in zip([c, *widths[:-1]], widths, strict=True):
        enc += [nn.Conv2d(c_in, c_out, k, stride, pad), activation(cfg.activation)]
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, 2 * latent_dim))

    dec: list[nn.Module] = [
        nn.Linear(latent_dim, flat),
        activation(cfg.activation),
        nn.Unflatten(1, (widths[-1], fh, fw)),
    ]
    rev = list(reversed(widths))
    targets = list(reversed(sizes[:-1]))  # the size each transposed conv must produce
    for i, (c_in, (th, tw)) in enumerate(zip(rev, targets, strict=True)):
        last = i == len(rev) - 1
        c_out = out_channels if last else rev[i + 1]
        ih, iw = sizes[len(widths) - i]
        base_h, base_w = (ih - 1) * stride - 2 * pad + k, (iw - 1) * stride - 2 * pad + k
        dec.append(nn.ConvTranspose2d(c_in, c_out, k, stride, pad, output_padding=(th - base_h, tw - base_w)))
        if not last:
            dec.append(activation(cfg.activation))
    decoder = nn.Sequential(*dec)
    return encoder, decoder
