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

    def bind(self, image_shape: tuple[int, int, int]) -> None:
        """Called once the data's shape (C, H, W) is known, before the model's weights are loaded: where a
        likelihood's own parameters depend on it (loss.autoregressive's pixel-to-pixel weights)."""

    def on_8bit_data(self) -> Likelihood | None:
        """The likelihood that scores 8-bit pixels as the discrete data they are, a distribution over each
        pixel's 256 levels, from the same decoder outputs; None where there is none (Bernoulli: a
        distribution of binary data)."""
        return None


def _sum_data_dims(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(-3).sum(-1)


class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bern(x_i; sigmoid(logit_i)); valid for x in [0, 1] (the continuous-valued
    use is the usual 'BCE on grey levels' and is not normalised for non-binary x)."""

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, x = params.float().flatten(-3), x.float().flatten(-3)
        if torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad):
            return BernoulliNLL.apply(logits, x)
        return bernoulli_log_prob_values(logits, x).neg_()  # no gradient: evaluation's faster forward

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, x = params.float().flatten(-3), x.float().flatten(-3)
        if torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad):
            return -BernoulliNLL.apply(logits, x)
        return bernoulli_log_prob_values(logits, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params.float())

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)


class AutoregressiveBernoulli(Bernoulli):
    """loss=bernoulli loss.autoregressive=true: each pixel's logit adds a linear function of the pixels
    before it in raster order (channel, row, column), the visible autoregressive connections of DARN
    (Gregor et al. 2014), a fully visible sigmoid belief net whose biases the decoder gives:

        p(x|z) = prod_i Bern(x_i; sigmoid(l_i(z) + sum_{j<i} W_ij x_j))

    with W strictly lower-triangular, starting at zero (a plain Bernoulli). Each factor is a Bernoulli
    given the pixels before it, so p(x|z) is normalised over binary images and every bound stays a bound.
    Scoring x is one matrix product per image, shared by all k decodings; a draw (and the image shown
    for a code) goes pixel by pixel. The decoder keeps what is global (the digit), W what is local
    (strokes continue), which a factorised likelihood cannot say given z."""

    def bind(self, image_shape: tuple[int, int, int]) -> None:
        d = math.prod(image_shape)
        self.weight = nn.Parameter(torch.zeros(d, d))
        self.register_buffer("mask", torch.ones(d, d).tril_(-1), persistent=False)

    def _masked(self) -> torch.Tensor:
        if not hasattr(self, "weight"):
            raise RuntimeError("AutoregressiveBernoulli.bind(image_shape) was not called")
        return self.weight * self.mask

    def _logits(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The decoder's logits (..., C, H, W) plus W x: x (N, C, H, W) broadcasts over the leading draws."""
        context = x.float().flatten(-3) @ self._masked().T
        return params.float() + context.view(x.shape)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return super().nll(self._logits(params, x), x)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return super().log_prob(self._logits(params, x), x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The image shown for a code: each pixel's probability given the probabilities before it in place
        of pixels (a mean-field pass; the exact E[x|z] sums over every earlier pixel's value)."""
        return self._pixel_by_pixel(params, None, draw=False)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._pixel_by_pixel(params, generator, draw=True)

    @torch.no_grad()
    def _pixel_by_pixel(
        self, params: torch.Tensor, generator: torch.Generator | None, draw: bool
    ) -> torch.Tensor:
        """Ancestral pass in raster order: pixel i's logit is complete once pixels < i are set, and each set
        pixel adds its column of W to the logits after it."""
        logits = params.float().reshape(-1, math.prod(params.shape[-3:])).clone()
        weight = self._masked().float()
        out = torch.empty_like(logits)
        for i in range(logits.shape[1]):
            p = torch.sigmoid(logits[:, i])
            if draw:
                p = (torch.rand(p.shape, generator=generator, device=p.device) < p).float()
            out[:, i] = p
            logits[:, i + 1 :].addr_(p, weight[i + 1 :, i])
        return out.view(params.shape)


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

    def on_8bit_data(self) -> Likelihood:
        return DiscretizedGaussian(self)


class DiscretizedGaussian(Likelihood):
    """A Gaussian likelihood read as a distribution over 8-bit pixels, for evaluation: each pixel's
    probability is the mass of its bin of width 1/255 around x under N(mu, sigma^2), the end bins
    reaching to -inf and +inf, so the 256 masses sum to 1 and -log p(x|z) is a code length of the 8-bit
    image, whatever sigma the model learned.

    Chosen over uniform dequantisation (-log of the density at x + u, u ~ U(0, 1/256), plus D log 256 per
    image): that bound holds only in expectation over the noise and is loose for a model trained on the
    undithered x, whose density at the grid points can exceed 256 per dimension (a negative code length
    once sigma is small); the bin masses need no noise and bound -log P(x) of the 8-bit data for any
    Gaussian, the same decoder outputs the model was trained to give."""

    def __init__(self, gaussian: Gaussian) -> None:
        super().__init__()
        self.gaussian = gaussian
        self.param_channels = gaussian.param_channels

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, log_sigma = self.gaussian._split(params)
        # in float64: a bin much narrower than sigma is the difference of two nearly equal log Phi, whose
        # float32 rounding would cost 1e-4 of its mass (evaluation only, so the cost does not matter)
        log_p = discretized_normal_log_prob(mu.double(), log_sigma.double(), x.double())
        return _sum_data_dims(log_p).to(mu.dtype)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.gaussian.mean(params).clamp(0.0, 1.0)

    def on_8bit_data(self) -> Likelihood:
        return self

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A Gaussian draw put in its bin: clamped to [0, 1] and rounded to the 256 levels."""
        return (self.gaussian.sample(params, generator).clamp(0.0, 1.0) * 255).round() / 255


def discretized_normal_log_prob(mu: torch.Tensor, log_sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under N(mu, e^(2 log_sigma)) per pixel, x in {0, 1/255, ..., 1}, the end bins
    taking the tails. With a < b the bin's edges in standard units, and the bin reflected to the left of
    the mean (a, b -> -b, -a) when its centre lies right of it, so that Phi is read where it is small and
    accurate:

        log (Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b)))

    exact and finite however far the bin lies from the mean (log_ndtr is accurate in the far tail)."""
    half = 0.5 / 255
    inv = torch.exp(-log_sigma)
    low = torch.where(x < half, -math.inf, (x - half - mu) * inv)
    high = torch.where(x > 1 - half, math.inf, (x + half - mu) * inv)
    right = (x - mu) > 0  # the bin's centre is right of the mean: reflect it
    a, b = torch.where(right, -high, low), torch.where(right, -low, high)
    log_b = torch.special.log_ndtr(b)
    return log_b + _log1mexp(torch.special.log_ndtr(a) - log_b)


def _log1mexp(t: torch.Tensor) -> torch.Tensor:
    """log(1 - e^t) for t <= 0, accurate on both sides of -log 2 (Maechler 2012)."""
    return torch.where(t > -math.log(2), torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))


def _log_sigmoid(t: torch.Tensor) -> torch.Tensor:
    """log sigmoid(t) = min(t, 0) + log sigmoid(|t|): sigmoid(|t|) lies in [0.5, 1], so its log is stable;
    torch's logsigmoid goes through log1p, not vectorised on CPU (see BernoulliNLL)."""
    return t.clamp(max=0) + torch.log(torch.sigmoid(t.abs()))


class DiscretizedLogistic(Likelihood):
    """p(x|z) for 8-bit pixels, x in {0, 1/255, ..., 1}: each pixel's probability is the mass of its bin
    (width 1/255) under a logistic with the decoder's mean and scale, the end bins reaching to -inf and
    +inf (Salimans et al. 2017, PixelCNN++), or under a mixture of K such logistics. A proper discrete
    likelihood: -log p(x|z) is a code length of the 8-bit image (never negative), so -ELBO in bits
    compares with published bits per dimension and with the bits of a lossless compressor
    (`vae score score=complexity`). The scale is learned once for all pixels ('global', shared by the
    components) or predicted per pixel by the decoder ('pixel').

    The decoder's outputs per data channel, in blocks of C channels (block j is channels j*C .. j*C+C-1):
    the K components' means, then (scale=pixel) their log-scales, then (K > 1) their mixture logits; at
    K = 1 this is [mean, log-scale], the single logistic's layout. Each data channel of each pixel has
    its own mixture (PixelCNN++ shares the mixture across a pixel's channels and couples the channels
    autoregressively; here the latent code carries their dependence)."""

    BIN = 1.0 / 255.0

    def __init__(self, scale: str, init_scale: float, min_scale: float, components: int = 1) -> None:
        super().__init__()
        self.scale = scale
        self.components = components
        self.min_log_scale = math.log(min_scale)
        blocks_per_component = 2 if scale == "pixel" else 1
        self.param_channels = components * blocks_per_component + (components if components > 1 else 0)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K = 1: (mean, log-scale), each (..., C, H, W)."""
        params = params.float()
        if self.scale == "pixel":
            mu, log_scale = params.chunk(2, dim=-3)
        else:
            mu, log_scale = params, self.log_scale.expand_as(params)
        return mu, log_scale.clamp(min=self.min_log_scale)

    def _mixture(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K > 1: (log mixture weights, means, log-scales), each (..., K, C, H, W)."""
        k = self.components
        params = params if params.dtype == torch.float64 else params.float()  # float64 kept: gradcheck
        # one view and unbind (not a slice per block): the backward writes every gradient into one tensor
        blocks = params.unflatten(-3, (self.param_channels // k, k, -1)).unbind(-5)  # each (..., K, C, H, W)
        if self.scale == "pixel":
            means, log_scales, logits = blocks
        else:
            (means, logits), log_scales = blocks, self.log_scale.expand_as(blocks[0])
        return torch.log_softmax(logits, dim=-4), means, log_scales.clamp(min=self.min_log_scale)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.components == 1:
            mu, log_scale = self._split(params)
            log_p = DiscretizedLogisticLogProb.apply(mu, log_scale, x.float().expand_as(mu))
            return _sum_data_dims(log_p)
        log_weights, means, log_scales = self._mixture(params)
        x = x.to(means.dtype).unsqueeze(-4).expand_as(means)
        # log sum_k pi_k P_k(bin): each P_k in log space (exact and stable, see DiscretizedLogisticLogProb),
        # combined by log-sum-exp, so bins that every component finds unlikely stay finite
        log_p = torch.logsumexp(log_weights + DiscretizedLogisticLogProb.apply(means, log_scales, x), dim=-4)
        return _sum_data_dims(log_p)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mean of the (mixture of) logistic(s), clamped to the pixel range [0, 1]."""
        if self.components == 1:
            return self._split(params)[0].clamp(0.0, 1.0)
        log_weights, means, _ = self._mixture(params)
        return (log_weights.exp() * means).sum(-4).clamp(0.0, 1.0)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A component drawn by its weight (K > 1), then a logistic draw rounded to the 256 levels."""
        if self.components == 1:
            mu, log_scale = self._split(params)
        else:
            log_weights, means, log_scales = self._mixture(params)
            pick = _draw_component(log_weights, generator)
            mu, log_scale = means.gather(-4, pick).squeeze(-4), log_scales.gather(-4, pick).squeeze(-4)
        u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype).clamp(1e-6, 1 - 1e-6)
        x = mu + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return (x.clamp(0.0, 1.0) * 255).round() / 255

    def on_8bit_data(self) -> Likelihood:
        return self


def _draw_component(log_weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One component index per pixel from weights (..., K, C, H, W), by inverting the weights' running
    sum at u ~ U[0, 1): index (..., 1, C, H, W)."""
    cumulative = log_weights.exp().cumsum(-4)
    shape = (*cumulative.shape[:-4], 1, *cumulative.shape[-3:])
    u = torch.rand(shape, generator=generator, device=cumulative.device, dtype=cumulative.dtype)
    return (cumulative < u).sum(-4, keepdim=True).clamp_(max=log_weights.shape[-4] - 1)


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


#: at most this many pixels' sigmoid(|logit|) are multiplied together before one log is taken
#: (`bernoulli_log_prob_values`): each factor lies in [1/2, 1], so a block's product stays above 2^-64, far
#: from float32's smallest normal number (2^-126), and rounds like a sum of as many logs
LOG_BLOCK = 64


def log_block(d: int) -> int:
    """The pixels per block of `bernoulli_log_prob_values` for rows of d: the largest divisor of d in
    (LOG_BLOCK / 2, LOG_BLOCK] (56 for 784), so that no pixels are left over, else LOG_BLOCK."""
    return next((b for b in range(LOG_BLOCK, LOG_BLOCK // 2, -1) if d % b == 0), LOG_BLOCK)


def bernoulli_log_prob_values(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-BernoulliNLL without a gradient, for evaluation, where the importance-weighted bound scores k
    decodings of every image (vae_cli/estimators.py): log Bern(x; sigmoid(l)) summed over the last
    dimension, x broadcasting against the logits (..., D), written as

        sum_blocks log prod_{d in block} sigmoid(|l_d|)  -  sum_d [max(l_d, 0) - x_d l_d]

    one log per block of `log_block(D)` pixels instead of one per pixel (the logs were a third of the
    likelihood's time), the same value up to float rounding."""
    logits = logits.expand(torch.broadcast_shapes(logits.shape, x.shape))  # (the in-place ops need it)
    d = logits.shape[-1]
    block = log_block(d)
    work = logits.clamp_min(0).addcmul_(x, logits, value=-1)  # max(l, 0) - x l
    linear = work.sum(-1)
    p = torch.abs(logits, out=work).sigmoid_()  # the same memory again: no fresh pages
    whole = d - d % block
    parts = [p[..., :whole].unflatten(-1, (-1, block)).prod(-1).log_().sum(-1)] if whole else []
    if whole < d:  # the last d % block pixels (d < LOG_BLOCK / 2, or no divisor)
        parts.append(p[..., whole:].prod(-1).log_())
    return sum(parts[1:], parts[0]).sub_(linear)


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
    return AutoregressiveBernoulli() if cfg.autoregressive else Bernoulli()


@LIKELIHOODS.register("gaussian")
def _gaussian(cfg: LossConfig) -> Likelihood:
    # null (auto) keys are resolved by `vae train` (vae_cli/config/auto.py); unresolved, the images' values
    variance = cfg.variance if cfg.variance is not None else "global"
    return Gaussian(variance, cfg.sigma if cfg.sigma is not None else 0.1, cfg.min_sigma)


@LIKELIHOODS.register("logistic")
def _logistic(cfg: LossConfig) -> Likelihood:
    return DiscretizedLogistic(cfg.scale, cfg.init_scale, cfg.min_scale, cfg.components)


def create_likelihood(cfg: LossConfig) -> Likelihood:
    if cfg.name == "auto":
        raise ConfigError(
            "loss=auto is picked from the data (vae_cli.config.auto.resolve_auto, as vae train does): "
            f"choose one of {', '.join(LIKELIHOODS.names())}"
        )
    return LIKELIHOODS.get(cfg.name)(cfg)
