"""Decoder likelihoods p(x|z): how decoder outputs become log-probabilities and images.

Each likelihood turns the decoder's output tensor ("params", shape (..., P*C, H, W) where P is
`param_channels`) into a log p(x|z) per leading index (...), summed over the data dimensions (C, H, W),
in nats. x broadcasts against the params: (N, C, H, W) data scores (k, N, P*C, H, W) decodings of k
draws per example without being copied k times.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vae_cli.config import LossConfig
from vae_cli.errors import ConfigError
from vae_cli.registry import Registry

LIKELIHOODS: Registry = Registry("loss")


class Likelihood(nn.Module):
    #: decoder output channels per data channel
    param_channels: int = 1

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over the data dimensions (C, H, W): shape (...,), the params' leading dims."""
        raise NotImplementedError

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z), shaped like `log_prob`: the reconstruction term the training loss uses."""
        return -self.log_prob(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], the image shown for a decoded code."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw x ~ p(x|z)."""
        raise NotImplementedError


def _sum_data_dims(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(-3).sum(-1)


class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bern(x_i; sigmoid(logit_i)); valid for x in [0, 1] (the continuous-valued
    use is the usual 'BCE on grey levels' and is not normalised for non-binary x)."""

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return BernoulliNLL.apply(params.float().flatten(-3), x.float().flatten(-3))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.nll(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params.float())

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)


class Gaussian(Likelihood):
    """p(x|z) = prod_i N(x_i; mu_i, sigma_i^2) with sigma fixed, learned once for all pixels
    ('global') or predicted per pixel by the decoder ('pixel')."""

    def __init__(self, variance: str, sigma: float, min_sigma: float) -> None:
        super().__init__()
        self.variance = variance
        self.min_log_sigma = math.log(min_sigma)
        self.param_channels = 2 if variance == "pixel" else 1
        log_sigma = torch.tensor(math.log(sigma))
        if variance == "global":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = params.float()
        if self.variance == "pixel":
            mu, log_sigma = params.chunk(2, dim=-3)
        else:
            mu, log_sigma = params, self.log_sigma.expand_as(params)
        return mu, log_sigma.clamp(min=self.min_log_sigma)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, log_sigma = self._split(params)
        # log N(x; mu, s^2) = -(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2
        log_p = (
            -0.5 * ((x.float() - mu) * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        )
        return _sum_data_dims(log_p)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0]

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_sigma = self._split(params)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(log_sigma) * eps


def _log_sigmoid(t: torch.Tensor) -> torch.Tensor:
    """log sigmoid(t) = min(t, 0) + log sigmoid(|t|): sigmoid(|t|) lies in [0.5, 1], so its log is stable;
    torch's logsigmoid goes through log1p, not vectorised on CPU (see BernoulliNLL)."""
    return t.clamp(max=0) + torch.log(torch.sigmoid(t.abs()))


class DiscretizedLogistic(Likelihood):
    """p(x|z) for 8-bit pixels, x in {0, 1/255, ..., 1}: each pixel's probability is the mass of its bin
    (width 1/255) under a logistic with the decoder's mean and scale, the end bins reaching to -inf and
    +inf (Salimans et al. 2017, PixelCNN++). A proper discrete likelihood: -log p(x|z) is a code length
    of the 8-bit image (never negative), so -ELBO in bits compares with the bits of a lossless
    compressor (`vae score score=complexity`). The scale is learned once for all pixels ('global') or
    predicted per pixel by the decoder ('pixel')."""

    BIN = 1.0 / 255.0

    def __init__(self, scale: str, init_scale: float, min_scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.min_log_scale = math.log(min_scale)
        self.param_channels = 2 if scale == "pixel" else 1
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = params.float()
        if self.scale == "pixel":
            mu, log_scale = params.chunk(2, dim=-3)
        else:
            mu, log_scale = params, self.log_scale.expand_as(params)
        return mu, log_scale.clamp(min=self.min_log_scale)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, log_scale = self._split(params)
        log_p = DiscretizedLogisticLogProb.apply(mu, log_scale, x.float().expand_as(mu))
        return _sum_data_dims(log_p)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0].clamp(0.0, 1.0)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_scale = self._split(params)
        u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype).clamp(1e-6, 1 - 1e-6)
        x = mu + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return (x.clamp(0.0, 1.0) * 255).round() / 255


class DiscretizedLogisticLogProb(torch.autograd.Function):
    """log p(x) per pixel under the discretised logistic (mean mu, log-scale s), with a hand-written
    backward: about twice as fast on CPU as autograd through its dozen elementwise steps. With
    u = (x - mu + h) / e^s, l = (x - mu - h) / e^s (the bin's edges, h = 1/510) and w = u - l:

        log p = log sigmoid(u) + log sigmoid(-l) + log(1 - e^-w)     (0 < x < 1)
                log sigmoid(u)  (x = 0),     log sigmoid(-l)  (x = 1)

    stable however far the bin is from the mean. Gradients, with a = sigmoid(-u) (not at x = 1) and
    b = sigmoid(l) (not at x = 0): d/dmu = -(a - b) / e^s, d/ds = -u a + l b - w / (e^w - 1) (inner bins)."""

    H = 0.5 / 255.0

    @staticmethod
    def _terms(mu: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inv = torch.exp(-log_scale)
        upper = (x - mu + DiscretizedLogisticLogProb.H) * inv
        lower = upper - 2 * DiscretizedLogisticLogProb.H * inv
        first, last = x < DiscretizedLogisticLogProb.H, x > 1 - DiscretizedLogisticLogProb.H
        return inv, upper, lower, first, last

    @staticmethod
    def forward(ctx: Any, mu: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mu, log_scale, x)
        inv, upper, lower, first, last = DiscretizedLogisticLogProb._terms(mu, log_scale, x)
        width = torch.log(-torch.expm1(-2 * DiscretizedLogisticLogProb.H * inv))
        log_p = _log_sigmoid(upper).masked_fill_(last, 0.0)
        log_p += _log_sigmoid(-lower).masked_fill_(first, 0.0)
        log_p += width.expand_as(log_p).masked_fill(first | last, 0.0)
        return log_p

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        mu, log_scale, x = ctx.saved_tensors
        inv, upper, lower, first, last = DiscretizedLogisticLogProb._terms(mu, log_scale, x)
        a = torch.sigmoid(-upper).masked_fill_(last, 0.0)
        b = torch.sigmoid(lower).masked_fill_(first, 0.0)
        grad_mu = ((b - a) * inv * grad).sum_to_size(mu.shape) if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            w = 2 * DiscretizedLogisticLogProb.H * inv
            inner = (w / torch.expm1(w)).expand_as(a).masked_fill(first | last, 0.0)
            grad_scale = ((lower * b - upper * a - inner) * grad).sum_to_size(log_scale.shape)
        return grad_mu, grad_scale, None


class BernoulliNLL(torch.autograd.Function):
    """-log Bern(x; sigmoid(l)) summed over the last dimension of logits (..., D), x broadcasting against
    them: the same value as binary_cross_entropy_with_logits(l, x).sum(-1), about 2x faster on CPU with a
    one-pass backward.

        -log Bern(x; sigmoid(l)) = softplus(l) - x * l,   softplus(l) = max(l, 0) - log sigmoid(|l|)

    sigmoid(|l|) lies in [0.5, 1], so its log is stable; torch's own softplus/log_sigmoid go through
    log1p, which is not vectorised on CPU (5x slower than sigmoid + log). Gradients:
    d/dl = sigmoid(l) - x, d/dx = -l."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        nll = logits.clamp_min(0).sub_(x * logits).sub_(logits.abs().sigmoid_().log_())
        return nll.sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, x = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = torch.sigmoid(logits).sub_(x).mul_(grad) if ctx.needs_input_grad[0] else None
        grad_x = (-logits * grad).sum_to_size(x.shape) if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


@LIKELIHOODS.register("bernoulli")
def _bernoulli(cfg: LossConfig) -> Likelihood:
    return Bernoulli()


@LIKELIHOODS.register("gaussian")
def _gaussian(cfg: LossConfig) -> Likelihood:
    # null (auto) keys are resolved by `vae train` (vae_cli/config/auto.py); unresolved, the images' values
    variance = cfg.variance if cfg.variance is not None else "global"
    return Gaussian(variance, cfg.sigma if cfg.sigma is not None else 0.1, cfg.min_sigma)


@LIKELIHOODS.register("logistic")
def _logistic(cfg: LossConfig) -> Likelihood:
    return DiscretizedLogistic(cfg.scale, cfg.init_scale, cfg.min_scale)


def create_likelihood(cfg: LossConfig) -> Likelihood:
    if cfg.name == "auto":
        raise ConfigError(
            "loss=auto is picked from the data (vae_cli.config.auto.resolve_auto, as vae train does): "
            f"choose one of {', '.join(LIKELIHOODS.names())}"
        )
    return LIKELIHOODS.get(cfg.name)(cfg)
