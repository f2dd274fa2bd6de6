"""The likelihoods (vae_cli/likelihoods.py): log p(x|z) against torch.distributions and BCE-with-logits."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from vae_cli.config import LossConfig
from vae_cli.likelihoods import (
    LOG_BLOCK,
    BernoulliNLL,
    DiscretizedLogistic,
    Gaussian,
    bernoulli_log_prob_values,
    create_likelihood,
)
from vae_cli.likelihoods import Bernoulli as BernoulliLikelihood


def test_bernoulli_log_prob_matches_torch() -> None:
    torch.manual_seed(0)
    logits, x = torch.randn(4, 1, 5, 5) * 3, torch.randint(0, 2, (4, 1, 5, 5)).float()
    lik = create_likelihood(LossConfig(name="bernoulli"))
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(logits, x), expected)
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits))


def test_bernoulli_nll_matches_bce_with_logits_in_value_and_gradient() -> None:
    """The hand-written forward/backward of the Bernoulli NLL against torch's BCE-with-logits, including
    logits far in the tails (where a naive log(sigmoid(l)) would give -inf) and grey-level targets."""
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(6, 50) * 4, torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0] * 10])])
    x = torch.rand(7, 50)
    x[:3] = x[:3].round()
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    nll = BernoulliNLL.apply(ours, xo)
    expected = F.binary_cross_entropy_with_logits(theirs, xt, reduction="none").sum(1)
    torch.testing.assert_close(nll, expected, rtol=1e-6, atol=1e-4)
    weights = torch.randn(7)  # a non-uniform upstream gradient
    (nll * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    torch.testing.assert_close(xo.grad, xt.grad)
    double = (
        torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
        torch.rand(3, 5, dtype=torch.float64),
    )
    assert torch.autograd.gradcheck(BernoulliNLL.apply, double)
    draws = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)  # x (3, 5) broadcast over draws
    assert torch.autograd.gradcheck(
        BernoulliNLL.apply, (draws, torch.rand(3, 5, dtype=torch.float64, requires_grad=True))
    )


@pytest.mark.parametrize("d", [5, LOG_BLOCK, 3 * LOG_BLOCK + 7, 784])
def test_bernoulli_nll_without_gradient_matches_bce_with_logits(d: int) -> None:
    """The evaluation path (no gradient: sigmoid(|l|) multiplied in blocks of up to LOG_BLOCK pixels, one
    log per block) against BCE-with-logits in float64, for D below a block, one block, blocks and a
    remainder (D prime), blocks of a divisor (784: 56): logits in the far tails and at 0 (a block's
    product then 2^-block), grey-level x, x broadcast over the draws and the draws over x; with a
    gradient wanted, the autograd path."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4, d) * 4
    logits[0, 0] = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0]).repeat(d // 5 + 1)[:d]
    logits[0, 1] = 0.0
    x = torch.rand(4, d)
    x[:2] = x[:2].round()

    def bce(lg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lg, target = torch.broadcast_tensors(lg.double(), target.double())
        return F.binary_cross_entropy_with_logits(lg, target, reduction="none").sum(-1)

    lik = BernoulliLikelihood()
    with torch.inference_mode():  # as the estimators call it: (draws, N, C, H, W) against x (N, C, H, W)
        ours = lik.nll(logits.view(3, 4, 1, 1, d), x.view(4, 1, 1, d))
    torch.testing.assert_close(ours.double(), bce(logits, x), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(ours[0, 1].double(), torch.tensor(d * math.log(2.0), dtype=torch.float64))
    draws_of_x = torch.rand(3, 4, d)  # x with more leading dimensions than the logits
    torch.testing.assert_close(
        -bernoulli_log_prob_values(logits[0], draws_of_x).double(),
        bce(logits[0], draws_of_x),
        rtol=1e-6,
        atol=1e-4,
    )
    wanted = logits.clone().requires_grad_()
    lik.nll(wanted.view(3, 4, 1, 1, d), x.view(4, 1, 1, d)).sum().backward()  # autograd: sigmoid(l) - x
    torch.testing.assert_close(wanted.grad, torch.sigmoid(logits) - x)


@pytest.mark.parametrize("variance", ["fixed", "global", "pixel"])
def test_gaussian_log_prob_matches_torch(variance: str) -> None:
    torch.manual_seed(0)
    lik = create_likelihood(LossConfig(name="gaussian", variance=variance, sigma=0.3, min_sigma=1e-3))
    x = torch.rand(3, 2, 4, 4)
    params = torch.randn(3, 2 * lik.param_channels, 4, 4)
    if variance == "pixel":
        mu, log_sigma = params.chunk(2, dim=1)
    else:
        mu, log_sigma = params, torch.full_like(params, math.log(0.3))
    expected = Normal(mu, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(params, x), expected)
    torch.testing.assert_close(lik.mean(params), mu)


def test_gaussian_variances_are_learned_only_when_asked() -> None:
    fixed = Gaussian("fixed", 0.1, 1e-3)
    learned = Gaussian("global", 0.1, 1e-3)
    assert not list(fixed.parameters())
    assert [p.shape for p in learned.parameters()] == [torch.Size([])]


def test_learned_sigma_is_floored() -> None:
    lik = Gaussian("pixel", 0.1, 0.01)
    params = torch.cat([torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), -50.0)], dim=1)
    expected = Normal(torch.zeros(1, 1, 2, 2), 0.01).log_prob(torch.zeros(1, 1, 2, 2)).sum()
    torch.testing.assert_close(lik.log_prob(params, torch.zeros(1, 1, 2, 2)), expected.view(1))


@pytest.mark.parametrize(
    "likelihood", [BernoulliLikelihood(), Gaussian("pixel", 0.3, 1e-3)], ids=["bernoulli", "gaussian"]
)
def test_log_prob_of_draws_broadcasts_the_data_instead_of_copying_it(likelihood) -> None:
    """The IWAE scores (s, N, ...) decodings against (N, ...) data by broadcasting: equal to scoring the
    flattened decodings against the data repeated s times."""
    g = torch.Generator().manual_seed(0)
    s, n = 5, 7
    params = 6 * torch.randn(s * n, likelihood.param_channels, 4, 4, generator=g)
    for x in (
        torch.bernoulli(torch.full((n, 1, 4, 4), 0.3), generator=g),
        torch.rand(n, 1, 4, 4, generator=g),
    ):
        expected = likelihood.log_prob(params, x.unsqueeze(0).expand(s, *x.shape).flatten(0, 1)).view(s, n)
        torch.testing.assert_close(
            likelihood.log_prob(params.view(s, n, *params.shape[1:]), x), expected, atol=1e-4, rtol=1e-5
        )


@pytest.mark.parametrize("log_scale", [math.log(1e-4), math.log(1e-3), math.log(0.05), math.log(0.5)])
def test_discretized_logistic_is_a_distribution_over_the_256_levels(log_scale: float) -> None:
    """Each pixel's masses over its 256 levels sum to 1 (the end bins reach to -inf and +inf), match the
    logistic CDF's differences computed directly in float64, and are never above 1 (a code length >= 0),
    whatever the mean, even far outside [0, 1]."""
    lik = create_likelihood(LossConfig(name="logistic", scale="pixel", init_scale=0.05, min_scale=1e-4))
    mu = torch.tensor([0.3, 0.0, 1.0, 0.5, 0.5 + 0.5 / 255, -3.0, 4.0]).view(-1, 1, 1, 1)
    params = torch.cat([mu, torch.full_like(mu, log_scale)], 1).expand(256, -1, -1, -1, -1)
    levels = torch.arange(256).float().div(255).view(256, 1, 1, 1, 1)
    log_p = lik.log_prob(params, levels).double()  # (256 levels, 7 pixels)
    assert torch.isfinite(log_p).all() and (log_p <= 1e-6).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(7, dtype=torch.float64), atol=2e-4, rtol=0)
    x, m, s = levels.view(256, 1).double(), mu.view(1, -1).double(), math.exp(log_scale)
    upper = torch.where(x > 1 - 0.5 / 255, 1.0, torch.sigmoid((x + 0.5 / 255 - m) / s))
    lower = torch.where(x < 0.5 / 255, 0.0, torch.sigmoid((x - 0.5 / 255 - m) / s))
    direct = (upper - lower).log()
    held = direct.exp() > 1e-6  # where the float64 difference itself is accurate
    torch.testing.assert_close(log_p[held], direct[held], atol=1e-5, rtol=1e-5)


def test_discretized_logistic_draws_and_means_are_pixels() -> None:
    lik = create_likelihood(LossConfig(name="logistic", scale="global", init_scale=0.05, min_scale=1e-4))
    assert lik.param_channels == 1 and lik.log_scale.requires_grad
    params = torch.linspace(-1, 2, 50).view(1, 1, 5, 10)
    draws = lik.sample(params, torch.Generator().manual_seed(0))
    assert torch.equal((draws * 255).round() / 255, draws) and draws.min() >= 0 and draws.max() <= 1
    assert torch.equal(lik.mean(params), params.clamp(0, 1))


def test_discretized_logistic_backward_matches_autograd_numerically() -> None:
    """The hand-written backward against finite differences, at inner bins and both end bins, for a
    scale per pixel and for one scale broadcast to every pixel (loss.scale=global)."""
    from vae_cli.likelihoods import DiscretizedLogisticLogProb

    torch.manual_seed(0)
    mu = (torch.rand(3, 40, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    log_scale = (torch.rand(3, 40, dtype=torch.float64) * 6 - 7).requires_grad_()
    x = torch.randint(0, 256, (3, 40)).double() / 255
    x[0, :5], x[1, :5] = 0.0, 1.0
    assert torch.autograd.gradcheck(DiscretizedLogisticLogProb.apply, (mu, log_scale, x), eps=1e-7, atol=1e-5)
    one = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, s: DiscretizedLogisticLogProb.apply(m, s.expand_as(m), x), (mu, one), eps=1e-7, atol=1e-5
    )


# --- the mixture of discretised logistics (loss.components) and the discretised Gaussian -----------------


def mixture(components: int, scale: str = "pixel"):
    return create_likelihood(
        LossConfig(name="logistic", scale=scale, init_scale=0.05, min_scale=1e-4, components=components)
    )


def random_mixture_params(n: int, k: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(n, 3*K*C, h, w) in the documented layout: K blocks of C means, of C log-scales, of C logits;
    means partly outside [0, 1], scales from 1e-3 to 1."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, k, c, h, w, generator=g) * 0.8 + 0.5
    log_scales = torch.rand(n, k, c, h, w, generator=g) * math.log(1e3) + math.log(1e-3)
    logits = torch.randn(n, k, c, h, w, generator=g) * 2
    return torch.cat([means, log_scales, logits], 1).flatten(1, 2)


def direct_log_masses(params: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """log P(bin of x) per pixel of a mixture, computed directly in float64 from the layout and the
    logistic CDF: sum_k pi_k (sigmoid((x + h - mu_k) / s_k) - sigmoid((x - h - mu_k) / s_k)), the end bins
    reaching to -inf and +inf."""
    p = params.double().unflatten(-3, (3, k, -1))  # (..., 3, K, C, H, W)
    means, scales, weights = p.select(-5, 0), p.select(-5, 1).exp(), p.select(-5, 2).softmax(-4)
    x = x.double().unsqueeze(-4)
    first, last = x < 0.5 / 255, x > 1 - 0.5 / 255
    high, low = (x + 0.5 / 255 - means) / scales, (x - 0.5 / 255 - means) / scales
    below = torch.where(last, 1.0, torch.sigmoid(high)) - torch.where(first, 0.0, torch.sigmoid(low))
    # right of the mean, the same mass from the upper tail, 1 - F, where it is small and accurate
    above = torch.where(first, 1.0, torch.sigmoid(-low)) - torch.where(last, 0.0, torch.sigmoid(-high))
    return (weights * torch.where(x > means, above, below)).sum(-4).log()


LEVELS = torch.arange(256).float().div(255)


def test_mixture_masses_sum_to_one_and_match_a_direct_float64_computation() -> None:
    """For random weights, means and scales, each pixel's masses over its 256 levels sum to 1 and equal
    the mixture of logistic-CDF differences, also at the end levels 0 and 255, which take the tails."""
    k, pixels = 3, 40
    lik = mixture(k)
    assert lik.param_channels == 3 * k
    params = random_mixture_params(pixels, k, 1, 1, 1).expand(256, -1, -1, -1, -1)
    levels = LEVELS.view(256, 1, 1, 1, 1)
    log_p = lik.log_prob(params, levels).double()  # (256 levels, pixels): one pixel per example
    assert torch.isfinite(log_p).all() and (log_p <= 1e-6).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(pixels, dtype=torch.float64), atol=2e-4, rtol=0)
    direct = direct_log_masses(params, levels.expand(256, pixels, 1, 1, 1), k).view(256, pixels)
    held = direct.exp() > 1e-6  # where the float64 difference itself is accurate
    torch.testing.assert_close(log_p[held], direct[held], atol=2e-5, rtol=1e-5)
    for edge in (0, 255):
        torch.testing.assert_close(log_p[edge].exp(), direct[edge].exp(), atol=1e-6, rtol=1e-4)


def test_mixture_reads_the_channels_in_the_documented_layout() -> None:
    """RGB images: the log-probability of 8-bit images is the sum of the direct per-pixel masses, with the
    decoder's channels read as [means | log-scales | logits], K blocks of C channels each."""
    k = 4
    params = random_mixture_params(5, k, 3, 4, 4, seed=1)
    x = torch.randint(0, 256, (5, 3, 4, 4), generator=torch.Generator().manual_seed(2)).float() / 255
    direct = direct_log_masses(params, x, k).flatten(1).sum(1)
    torch.testing.assert_close(mixture(k).log_prob(params, x).double(), direct, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("scale", ["pixel", "global"])
def test_one_component_is_the_single_logistic_and_equal_components_are_one(scale: str) -> None:
    """components=1 keeps today's layout and numbers exactly (checkpoints load and score the same); a
    mixture whose components are all one logistic is that logistic, whatever its weights."""
    g = torch.Generator().manual_seed(0)
    single = DiscretizedLogistic(scale, 0.05, 1e-4)
    one = mixture(1, scale)
    assert one.param_channels == single.param_channels == (2 if scale == "pixel" else 1)
    assert one.state_dict().keys() == single.state_dict().keys()
    params = torch.randn(6, 2 * single.param_channels, 4, 4, generator=g) * 0.5 + 0.3
    x = torch.randint(0, 256, (6, 2, 4, 4), generator=g).float() / 255
    assert torch.equal(one.log_prob(params, x), single.log_prob(params, x))
    assert torch.equal(
        one.sample(params, torch.Generator().manual_seed(3)),
        single.sample(params, torch.Generator().manual_seed(3)),
    )
    k = 3
    copies = mixture(k, scale)
    blocks = params.unflatten(1, (-1, 2))  # (N, P, C, H, W): mean (and log-scale) blocks
    logits = torch.randn(6, k, 2, 4, 4, generator=g)
    repeated = blocks.repeat_interleave(k, dim=1)  # each block K times: K equal components
    mixed = torch.cat([repeated, logits], 1).flatten(1, 2)
    torch.testing.assert_close(copies.log_prob(mixed, x), single.log_prob(params, x), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(copies.mean(mixed), single.mean(params))


def test_mixture_gradients_match_finite_differences() -> None:
    """The mixture's gradient (through the single logistic's hand-written backward, the log-softmax of
    the weights and the log-sum-exp) against finite differences in float64, end bins included."""
    k = 3
    lik = mixture(k)
    params = random_mixture_params(2, k, 2, 2, 3, seed=4).double().requires_grad_()
    x = torch.randint(0, 256, (2, 2, 2, 3), generator=torch.Generator().manual_seed(5)).double() / 255
    x[0, 0, 0], x[1, 1, 1] = 0.0, 1.0
    assert torch.autograd.gradcheck(lambda p: lik.log_prob(p, x), (params,), eps=1e-7, atol=1e-5)


def test_mixture_mean_and_draws() -> None:
    """The mean is sum_k pi_k mu_k clamped to [0, 1]; draws are pixels (the 256 levels), pick each
    component with its weight and are reproducible from the generator's seed."""
    k, n = 2, 20000
    lik = mixture(k)
    means = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1, 1).expand(n, 2, 1, 1, 1)
    log_scales = torch.full_like(means, math.log(0.01))
    logits = torch.tensor([0.3, 0.7]).log().view(1, 2, 1, 1, 1).expand(n, 2, 1, 1, 1)
    params = torch.cat([means, log_scales, logits], 1).flatten(1, 2)
    torch.testing.assert_close(lik.mean(params[:1]), torch.tensor(0.3 * 0.2 + 0.7 * 0.8).view(1, 1, 1, 1))
    draws = lik.sample(params, torch.Generator().manual_seed(0))
    assert torch.equal((draws * 255).round() / 255, draws) and draws.min() >= 0 and draws.max() <= 1
    share = float((draws < 0.5).float().mean())  # the first component's share of the draws
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert torch.equal(draws, lik.sample(params, torch.Generator().manual_seed(0)))
    far = torch.cat([torch.full((1, 2, 1, 1, 1), 3.0), log_scales[:1], logits[:1]], 1).flatten(1, 2)
    assert float(lik.mean(far)) == 1.0


@pytest.mark.parametrize("components", [1, 3])
def test_bits_per_dim_of_draws_is_the_entropy_of_the_discretised_logistic(components: int) -> None:
    """Data drawn from a known (mixture of) discretised logistic(s): the mean -log p(x) in bits per
    dimension is its entropy, -sum_b P(b) log2 P(b) per pixel computed directly, within Monte Carlo error."""
    from vae_cli.metrics import bits_per_dim

    lik, n, dims = mixture(components), 4000, 3 * 4 * 4
    full = random_mixture_params(1, components, 3, 4, 4, seed=6)  # with logits: the direct formula's input
    params = full if components > 1 else full[:, :6]  # one component: [means | log-scales], no logits
    params = params.expand(n, -1, -1, -1)
    draws = lik.sample(params, torch.Generator().manual_seed(7))
    nll = -lik.log_prob(params, draws).double()  # (n,) nats per image
    levels = LEVELS.view(256, 1, 1, 1, 1).expand(256, 1, 3, 4, 4)
    log_masses = direct_log_masses(full.expand(256, -1, -1, -1, -1), levels, components)
    entropy = float(-(log_masses.exp() * log_masses).nan_to_num().sum())  # nats per image, 0 log 0 = 0
    error = 4 * float(nll.std()) / math.sqrt(n)
    assert abs(bits_per_dim(float(nll.mean()), dims) - bits_per_dim(entropy, dims)) < bits_per_dim(
        error, dims
    )


@pytest.mark.parametrize("sigma", [1e-3, 0.02, 0.3, 5.0])
def test_discretized_gaussian_is_a_distribution_over_the_256_levels(sigma: float) -> None:
    """The Gaussian read as bin masses (evaluate's number comparable on 8-bit data): the 256 masses sum
    to 1, equal the normal CDF's differences computed directly in float64 (the end bins taking the
    tails), and stay finite for means far outside [0, 1]."""
    from vae_cli.likelihoods import DiscretizedGaussian

    lik = Gaussian("pixel", 0.1, 1e-3).on_8bit_data()
    assert isinstance(lik, DiscretizedGaussian) and lik.param_channels == 2
    mu = torch.tensor([0.3, 0.0, 1.0, 0.5 + 0.5 / 255, -3.0, 4.0]).view(-1, 1, 1, 1)
    params = torch.cat([mu, torch.full_like(mu, math.log(sigma))], 1).expand(256, -1, -1, -1, -1)
    levels = LEVELS.view(256, 1, 1, 1, 1)
    log_p = lik.log_prob(params, levels).double()  # (256, 6)
    assert torch.isfinite(log_p).all() and (log_p <= 1e-6).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(6, dtype=torch.float64), atol=2e-4, rtol=0)
    x, m = levels.view(256, 1).double(), mu.view(1, -1).double()
    normal = torch.distributions.Normal(m, sigma)
    upper = torch.where(x > 1 - 0.5 / 255, 1.0, normal.cdf(x + 0.5 / 255))
    lower = torch.where(x < 0.5 / 255, 0.0, normal.cdf(x - 0.5 / 255))
    direct = upper - lower
    held = direct > 1e-6
    torch.testing.assert_close(log_p[held], direct[held].log(), atol=1e-4, rtol=1e-5)


def test_each_likelihood_says_how_it_scores_8bit_data() -> None:
    logistic = create_likelihood(LossConfig(name="logistic"))
    assert logistic.on_8bit_data() is logistic
    assert BernoulliLikelihood().on_8bit_data() is None  # a likelihood of binary data
    draws = Gaussian("global", 0.1, 1e-3).on_8bit_data().sample(torch.randn(3, 1, 4, 4))
    assert torch.equal((draws * 255).round() / 255, draws) and draws.min() >= 0 and draws.max() <= 1


# --- loss=logistic needs 8-bit data ------------------------------------------------------------------------


def tensor_bundle(tmp_path: Path, values: np.ndarray, **keys):
    from vae_cli.config import DatasetConfig
    from vae_cli.data import create_dataset

    np.save(tmp_path / "x.npy", values)
    return create_dataset(DatasetConfig(name="tensor", path=str(tmp_path / "x.npy"), **keys), tmp_path)


@pytest.mark.parametrize(
    ("values", "keys", "message"),
    [
        (np.float32, {"standardize": False}, "tensor holds float values, not uint8 pixels"),
        (np.float32, {"standardize": True}, r"tensor holds standardised values \(dataset.standardize\)"),
        (np.uint8, {"standardize": True}, r"tensor holds standardised values \(dataset.standardize\)"),
        (
            np.uint8,
            {"binarize": "dynamic", "standardize": False},
            "dataset.binarize=dynamic makes them 0 or 1",
        ),
    ],
    ids=["floats", "standardised-floats", "standardised-uint8", "binarised"],
)
def test_logistic_on_data_that_is_not_8bit_is_one_line(tmp_path: Path, values, keys, message) -> None:
    from vae_cli.data.base import check_loss_range
    from vae_cli.errors import ConfigError

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 8, 8)).astype(values)
    data = tensor_bundle(tmp_path, pixels / 255 if values is np.float32 else pixels, **keys)
    with pytest.raises(ConfigError, match=f"^loss=logistic models 8-bit pixels.*{message}") as error:
        check_loss_range(data, "logistic")
    assert "\n" not in str(error.value)


def test_logistic_on_uint8_pixels_passes_and_train_stops_on_floats(tmp_path: Path) -> None:
    from vae_cli.cli import compose_config
    from vae_cli.data.base import check_loss_range
    from vae_cli.errors import ConfigError
    from vae_cli.training.loop import train

    pixels = np.random.default_rng(0).integers(0, 256, (40, 8, 8)).astype(np.uint8)
    check_loss_range(tensor_bundle(tmp_path, pixels, standardize=False), "logistic")  # no error
    floats = tmp_path / "floats.npy"
    np.save(floats, (pixels / 255).astype(np.float32))
    cfg = compose_config(
        [
            "dataset=tensor",
            f"dataset.path={floats}",
            "dataset.standardize=false",
            "model=mlp",
            "loss=logistic",
        ]
    )
    with pytest.raises(ConfigError, match="^loss=logistic models 8-bit pixels"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def _autoregressive(shape: tuple[int, int, int], seed: int = 0):
    lik = create_likelihood(LossConfig(name="bernoulli", autoregressive=True))
    lik.bind(shape)
    with torch.no_grad():
        lik.weight.normal_(generator=torch.Generator().manual_seed(seed))
    return lik


def test_autoregressive_bernoulli_is_a_distribution_over_binary_images() -> None:
    """exp log p(x|z) over all 2^4 binary 2x2 images sums to 1 for random logits and weights (only a
    strictly lower-triangular W keeps it normalised), and each factor is torch's Bernoulli given the
    pixels before it."""
    lik = _autoregressive((1, 2, 2))
    params = 2 * torch.randn(3, 1, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)
    log_p = lik.log_prob(params, images)  # (3, 16): every image under each of the three decodings
    torch.testing.assert_close(log_p.logsumexp(1), torch.zeros(3), atol=1e-5, rtol=0)
    w = lik.weight.detach().tril(-1)
    flat, logits = images.flatten(1), params.flatten(-3)  # (16, 4), (3, 1, 4)
    expected = Bernoulli(logits=logits + flat @ w.T).log_prob(flat).sum(-1)
    torch.testing.assert_close(log_p, expected)
    torch.testing.assert_close(lik.nll(params, images), -expected)


def test_autoregressive_bernoulli_starts_as_the_plain_one_and_learns_only_the_lower_triangle() -> None:
    lik = create_likelihood(LossConfig(name="bernoulli", autoregressive=True))
    lik.bind((1, 3, 3))
    params = torch.randn(5, 1, 3, 3)
    x = torch.bernoulli(torch.full((5, 1, 3, 3), 0.5))
    torch.testing.assert_close(lik.log_prob(params, x), BernoulliLikelihood().log_prob(params, x))
    torch.testing.assert_close(lik.mean(params), torch.sigmoid(params))
    lik.nll(params, x).sum().backward()
    assert lik.weight.grad.triu().abs().max() == 0 and lik.weight.grad.tril(-1).abs().max() > 0


def test_autoregressive_bernoulli_draws_follow_its_probabilities_and_are_seeded() -> None:
    lik = _autoregressive((1, 2, 2), seed=3)
    params = torch.tensor([0.5, -1.0, 0.3, 1.2]).view(1, 1, 2, 2)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)
    probs = lik.log_prob(params, images).exp().detach()  # (16,)
    draws = lik.sample(params.expand(40_000, 1, 2, 2), torch.Generator().manual_seed(0))
    index = (draws.flatten(1) * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long()
    freq = torch.bincount(index, minlength=16) / len(index)
    assert (freq - probs).abs().max() < 0.01  # 3.5 standard errors at the largest probability
    again = lik.sample(params.expand(40_000, 1, 2, 2), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_autoregressive_bernoulli_mean_feeds_each_probability_forward() -> None:
    """The image shown for a code: pixel 1's probability sees pixel 0's probability in its place."""
    lik = _autoregressive((1, 1, 2))
    params = torch.tensor([[[[0.4, -0.7]]]])
    p0 = torch.sigmoid(torch.tensor(0.4))
    p1 = torch.sigmoid(-0.7 + lik.weight[1, 0].detach() * p0)
    torch.testing.assert_close(lik.mean(params).flatten(), torch.stack([p0, p1]))
