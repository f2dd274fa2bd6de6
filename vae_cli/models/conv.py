"""Convolutional encoder (strided convs) and decoder (transposed convs) sized from the image shape.

Each encoder layer halves the spatial size (kernel k, stride 2, padding (k - 1) // 2, rounded down);
the decoder retraces the recorded sizes exactly, with `output_padding` absorbing odd sizes, so 28x28,
64x64 and any other size work without hard-wired shapes.

The layers are nn.Conv2d and nn.ConvTranspose2d with the same parameters (checkpoints load unchanged),
computing the same function faster on CPU (benchmarks/bench.py's conv anatomy measures each layer):
activations are channels-last (NHWC), the layout oneDNN's convolutions run in without reordering; a
layer whose output (encoder) or input (decoder) is 1x1 is the matrix product it amounts to, over the
weight taps that touch the image (a stride-2 conv from 3x3 to 1x1 as a 3x3x128 -> 256 product: oneDNN
ran it at a third of the matmul rate); and a transposed conv with few output channels (the decoder's
last: 1 or 3 image channels) runs forward as one product (a 1x1 conv) plus an overlap-add of its k*k
taps, since oneDNN's kernel vectorises over output channels and idles 15 of 16 AVX-512 lanes there
(6x slower); its backward stays oneDNN's. `fast = False` on a layer gives the stock op, to compare.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

    @property
    def flat(self) -> int:
        """The size of the flattened last feature map."""
        return math.prod(self.code_shape)

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


#: below this many output channels a transposed conv runs forward as a matrix product and overlap-add
#: (CPU, float32): oneDNN's kernel fills 16 output channels per AVX-512 vector. Forward + backward, 32
#: channels in, batch 128: 1.8-2.3x faster for 1 channel out, 1.3-1.6x for 3, slower from 6 on
FEW_CHANNELS = 4


def _channels_last(x: Tensor) -> Tensor:
    """x in channels-last strides. One channel counts as both layouts, and oneDNN then answers in NCHW,
    which the next layer would copy back (and the activations' backward mix the two, 10x slower): the
    one-channel view gets the channels-last strides explicitly."""
    if x.shape[1] == 1:
        n, _, h, w = x.shape
        return x.reshape(n, h, w, 1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


class StridedConv(nn.Conv2d):
    """The encoder's stride-2 conv (an nn.Conv2d, same parameters), channels-last; a matrix product over
    the taps that touch the image where the output is 1x1."""

    fast = True

    def forward(self, x: Tensor) -> Tensor:
        if not self.fast:
            return super().forward(x)
        x = _channels_last(x)
        (k, kw), (p, pw), (s, sw) = self.kernel_size, self.padding, self.stride
        h, w = x.shape[-2:]
        plain = self.padding_mode == "zeros" and self.dilation == (1, 1) and self.groups == 1
        if plain and (h + 2 * p - k) // s == 0 and (w + 2 * pw - kw) // sw == 0:  # a 1x1 output
            return conv_to_1x1(x, self.weight, self.bias, (p, pw))
        return super().forward(x)


class StridedConvTranspose(nn.ConvTranspose2d):
    """The decoder's stride-2 transposed conv (an nn.ConvTranspose2d, same parameters), channels-last; a
    matrix product where the input is 1x1, and a matrix product plus overlap-add forward where there are
    fewer than FEW_CHANNELS output channels (CPU, float32)."""

    fast = True

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if not self.fast or output_size is not None:
            return super().forward(x, output_size)
        x = _channels_last(x)
        k, p, op = self.kernel_size[0], self.padding[0], self.output_padding[0]
        square = self.kernel_size[1] == k and self.padding[1] == p and self.output_padding[1] == op
        if not (square and self.stride == (2, 2) and self.dilation == (1, 1) and self.groups == 1):
            return super().forward(x)
        if x.shape[-2:] == (1, 1) and op <= p:
            return transposed_from_1x1(x, self.weight, self.bias, p, k - 2 * p + op)
        if (
            self.out_channels < FEW_CHANNELS
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and k + op - p <= 2 * ((k + 1) // 2)  # the taps cover the output (else bias-only borders)
        ):
            return GemmTransposedConv.apply(x, self.weight, self.bias, p, op)
        return super().forward(x)


def conv_to_1x1(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """A conv whose output is 1x1 (any stride): input pixel (i, j) meets tap (i + p, j + pw), so it is
    x (N, H*W*C) @ those taps; taps beyond the kernel (images larger than it) meet nothing."""
    (p, pw), (k, kw) = padding, weight.shape[-2:]
    h, w = min(x.shape[-2], k - p), min(x.shape[-1], kw - pw)
    taps = weight[:, :, p : p + h, pw : pw + w].permute(0, 2, 3, 1).reshape(len(weight), -1)
    rows = x[:, :, :h, :w].permute(0, 2, 3, 1).reshape(len(x), -1)  # a view when channels-last
    return F.linear(rows, taps, bias).view(len(x), -1, 1, 1)


def transposed_from_1x1(x: Tensor, weight: Tensor, bias: Tensor | None, p: int, size: int) -> Tensor:
    """A stride-2 transposed conv of a 1x1 input: output pixel (y, x) is tap (y + p, x + p), so it is
    x (N, C_in) @ the taps, (C_in, size*size*C_out), in channels-last order."""
    c_out = weight.shape[1]
    taps = weight[:, :, p : p + size, p : p + size].permute(0, 2, 3, 1).reshape(len(weight), -1)
    rows = x.reshape(len(x), -1)
    y = rows @ taps if bias is None else torch.addmm(bias.repeat(size * size), rows, taps)
    return y.view(len(x), size, size, c_out).permute(0, 3, 1, 2)


def transposed_conv_gemm(x: Tensor, weight: Tensor, bias: Tensor | None, p: int, op: int) -> Tensor:
    """F.conv_transpose2d(x, weight, bias, stride=2, padding=p, output_padding=op) as one matrix product
    and an overlap-add: each input pixel times the (C_in, k*k*C_out) taps, whose 2x2 phases (tap
    2t + r lands on output row 2(i + t) + r) are summed over t and interleaved like pixel_shuffle."""
    n, c_in, h, w = x.shape
    k, c_out = weight.shape[-1], weight.shape[1]
    half = (k + 1) // 2
    if k % 2:  # an odd kernel padded with zero taps to an even one
        weight = F.pad(weight, (0, 1, 0, 1))
    # the taps as the (ty, tx, ry, rx, C_out) output channels of a 1x1 conv, for ky = 2 * ty + ry (and
    # kx); the product as that conv, channels-last (oneDNN: 3x faster than torch.mm at 131072x32 @ 32x48)
    taps = weight.reshape(c_in, c_out, half, 2, half, 2).permute(2, 4, 3, 5, 1, 0).reshape(-1, c_in, 1, 1)
    cols = F.conv2d(x, taps).permute(0, 2, 3, 1).reshape(n, h, w, half, half, 4 * c_out)
    hp, wp = h + half - 1, w + half - 1
    acc = x.new_zeros(n, hp, wp, 4 * c_out)
    for ty in range(half):
        for tx in range(half):
            acc[:, ty : ty + h, tx : tx + w] += cols[:, :, :, ty, tx]
    full = acc.view(n, hp, wp, 2, 2, c_out).permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * hp, 2 * wp, c_out)
    ho, wo = (h - 1) * 2 - 2 * p + k + op, (w - 1) * 2 - 2 * p + k + op
    out = full[:, p : p + ho, p : p + wo]
    out = out + bias if bias is not None else out.contiguous()
    return out.permute(0, 3, 1, 2)


class GemmTransposedConv(torch.autograd.Function):
    """transposed_conv_gemm forward; backward by the stock op's own (oneDNN's, fast here)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, p: int, op: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (p, op, bias is not None)
        return transposed_conv_gemm(x, weight, bias, p, op)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        p, op, has_bias = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            _channels_last(grad), x, weight, [weight.shape[1]] if has_bias else None,
            [2, 2], [p, p], [1, 1], True, [op, op], 1, [need_x, need_w, need_b and has_bias],
        )  # fmt: skip
        return gx, gw, gb, None, None


@MODELS.register("conv")
def build_conv(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    layout = stride2_layout(cfg, image_shape)
    encoder = nn.Sequential(*conv_trunk(cfg, image_shape, layout), nn.Linear(layout.flat, 2 * latent_dim))
    return encoder, conv_decoder(cfg, layout, latent_dim, out_channels)


def conv_trunk(cfg: ModelConfig, image_shape: tuple[int, int, int], layout: Stride2Layout) -> list[nn.Module]:
    """The encoder's stride-2 convs, each followed by the activation, then a flatten: (N, layout.flat)."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip([image_shape[0], *layout.widths[:-1]], layout.widths, strict=True):
        layers += [StridedConv(c_in, c_out, layout.kernel, 2, layout.pad), activation(cfg.activation)]
    return [*layers, nn.Flatten()]


def conv_decoder(cfg: ModelConfig, layout: Stride2Layout, latent_dim: int, out_channels: int) -> nn.Module:
    """z (N, latent_dim) -> a dense layer to the trunk's last feature map, then the transposed convs that
    retrace the encoder's sizes, the last to out_channels (no activation after it)."""
    dec: list[nn.Module] = [
        nn.Linear(latent_dim, layout.flat),
        activation(cfg.activation),
        nn.Unflatten(1, layout.code_shape),
    ]
    return ContiguousOutput(*dec, *transposed_stack(cfg, layout, out_channels))


def transposed_stack(cfg: ModelConfig, layout: Stride2Layout, out_channels: int) -> list[nn.Module]:
    """The decoder's transposed convs from the trunk's last feature map (layout.code_shape), retracing the
    encoder's sizes, each but the last followed by the activation; the last to out_channels."""
    layers: list[nn.Module] = []
    rev = list(reversed(layout.widths))
    for i, c_in in enumerate(rev):
        last = i == len(rev) - 1
        c_out = out_channels if last else rev[i + 1]
        layers.append(
            StridedConvTranspose(
                c_in, c_out, layout.kernel, 2, layout.pad, output_padding=layout.output_padding(i)
            )
        )
        if not last:
            layers.append(activation(cfg.activation))
    return layers


class ContiguousOutput(nn.Sequential):
    """The decoder: its output in the standard (NCHW-contiguous) layout, as the likelihoods expect."""

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z).contiguous()
