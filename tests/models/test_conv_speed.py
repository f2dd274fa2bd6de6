"""The conv model's fast formulations (vae_cli/models/conv.py) against the stock ops they replace:
channels-last activations, 1x1 layers as matrix products, the few-channel transposed conv as a matrix
product plus overlap-add. Same outputs and gradients (to 1e-5), same parameters and state_dict keys."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vae_cli.config import LossConfig
from vae_cli.config.models import ConvConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import conv, create_model
from vae_cli.models.conv import StridedConv, StridedConvTranspose, build_conv

GEOMETRIES = [  # (image shape, channels, kernel): the default 28x28 and 64x64, odd sizes and kernels
    ((1, 28, 28), [32, 64, 128, 256], 4),
    ((3, 64, 64), [8, 16, 32, 64], 4),
    ((3, 20, 17), [8, 16, 32], 3),
    ((1, 28, 28), [8, 16, 32, 64, 64], 5),
    ((2, 9, 9), [4, 8], 2),
    ((1, 13, 13), [8, 16], 6),
]


def stock(module: nn.Module) -> nn.Module:
    """A copy with every fast layer set back to the stock op."""
    module = copy.deepcopy(module)
    for m in module.modules():
        if isinstance(m, StridedConv | StridedConvTranspose):
            m.fast = False
    return module


def assert_same(fast: torch.Tensor, slow: torch.Tensor) -> None:
    scale = slow.abs().max().clamp_min(1.0)
    assert (fast - slow).abs().max() <= 1e-5 * scale, (fast - slow).abs().max()


@pytest.mark.parametrize(("shape", "channels", "kernel"), GEOMETRIES)
def test_fast_layers_give_the_stock_outputs_and_gradients(shape, channels, kernel) -> None:
    torch.manual_seed(0)
    encoder, decoder = build_conv(ConvConfig(channels=channels, kernel_size=kernel), shape, 4, shape[0])
    x = torch.rand(6, *shape)
    g = torch.Generator().manual_seed(1)
    runs = []
    for enc, dec in ((encoder, decoder), (stock(encoder), stock(decoder))):
        h = enc(x)
        y = dec(h[:, :4])
        (y * torch.randn(y.shape, generator=g)).sum().backward()
        g.manual_seed(1)
        grads = [p.grad for p in (*enc.parameters(), *dec.parameters())]
        runs.append((h, y, grads))
    (h, y, grads), (h0, y0, grads0) = runs
    assert y.shape == y0.shape == (6, *shape)
    assert y.is_contiguous()  # the decoder's output keeps the standard layout
    assert_same(h, h0)
    assert_same(y, y0)
    for a, b in zip(grads, grads0, strict=True):
        assert_same(a, b)


def test_each_fast_path_is_taken_on_the_default_geometry(monkeypatch) -> None:
    """28x28 with the default channels: the 3x3 -> 1x1 conv and the 1x1 -> 3x3 transposed conv are matrix
    products, the last transposed conv (1 channel) the matrix product plus overlap-add."""
    calls: dict[str, int] = {}
    for name in ("conv_to_1x1", "transposed_from_1x1", "transposed_conv_gemm"):
        original = getattr(conv, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(conv, name, counted)
    encoder, decoder = build_conv(ConvConfig(), (1, 28, 28), 20, 1)
    decoder(encoder(torch.rand(2, 1, 28, 28))[:, :20]).sum().backward()
    assert calls == {"conv_to_1x1": 1, "transposed_from_1x1": 1, "transposed_conv_gemm": 1}


@pytest.mark.parametrize(("size", "k", "op"), [(14, 4, 0), (3, 4, 1), (7, 3, 1), (5, 5, 0), (6, 6, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_transposed_conv_matches_conv_transpose2d(size, k, op, bias) -> None:
    torch.manual_seed(0)
    p = (k - 1) // 2
    x = torch.randn(3, 5, size, size + 1, requires_grad=True)
    w = torch.randn(5, 3, k, k, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if bias else None
    y = conv.GemmTransposedConv.apply(x, w, b, p, op)
    y0 = F.conv_transpose2d(x, w, b, 2, p, op)
    assert y.shape == y0.shape
    assert_same(y, y0)
    gy = torch.randn_like(y0)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, gy)
    grads0 = torch.autograd.grad(y0, inputs, gy)
    for a, b0 in zip(grads, grads0, strict=True):
        assert_same(a, b0)


def test_parameters_and_checkpoints_are_unchanged() -> None:
    """The layers are nn.Conv2d / nn.ConvTranspose2d with the same parameters: a state_dict written by
    the stock model (same keys, same initial weights for a seed) loads and gives the same outputs."""
    likelihood = create_likelihood(LossConfig(name="bernoulli"))
    torch.manual_seed(0)
    model = create_model(ConvConfig(), (1, 28, 28), 20, likelihood)
    torch.manual_seed(0)
    old = stock(create_model(ConvConfig(), (1, 28, 28), 20, likelihood))
    state = old.state_dict()
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert all(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in model.modules() if hasattr(m, "fast"))
    fresh = create_model(ConvConfig(), (1, 28, 28), 20, likelihood)
    fresh.load_state_dict(state)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert_same(fresh.decode(fresh.encode(x)[0]), old.decode(old.encode(x)[0]))


def test_bf16_autocast_takes_the_stock_transposed_conv() -> None:
    encoder, decoder = build_conv(ConvConfig(), (1, 28, 28), 20, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = decoder(encoder(torch.rand(2, 1, 28, 28))[:, :20])
    y.float().sum().backward()
    assert y.shape == (2, 1, 28, 28)
