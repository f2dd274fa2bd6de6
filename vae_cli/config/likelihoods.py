"""The `loss` group: one schema per likelihood p(x|z) (`vae train loss=<name>`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from vae_cli.config.fields import GroupBase, choice, key, option

NAME = "the likelihood p(x|z), chosen with loss=<name>"


@dataclass
class LossConfig(GroupBase):
    """The keys every likelihood has."""

    group = "loss"

    name: str = key(MISSING, NAME)


@option("loss", "auto")
@dataclass
class AutoLossConfig(LossConfig):
    """The default: bernoulli for images (gaussian for values outside [0, 1]), gaussian for vectors,
    picked once the data is read (vae_cli/config/auto.py). Choose loss=<name> to set a likelihood's keys."""

    name: str = key("auto", NAME)


@option("loss", "bernoulli")
@dataclass
class BernoulliConfig(LossConfig):
    """Bernoulli likelihood (BCE with logits), for binary or [0, 1] pixels."""

    name: str = key("bernoulli", NAME)
    autoregressive: bool = key(
        False,
        "add to each pixel's logit a learned linear function of the pixels before it in raster order "
        "(DARN's visible connections, Gregor et al. 2014): still a normalised likelihood of binary images, "
        "scored in one pass; drawing goes pixel by pixel",
    )


@option("loss", "gaussian")
@dataclass
class GaussianConfig(LossConfig):
    """Gaussian likelihood, for continuous pixels (or standardised features)."""

    name: str = key("gaussian", NAME)
    variance: str | None = choice(
        None,
        "fixed: sigma below | global: one learned sigma | pixel: the decoder predicts each pixel's (or "
        "feature's) sigma | null (auto): global for images, pixel for vectors",
        "fixed",
        "global",
        "pixel",
    )
    sigma: float | None = key(
        None,
        "the fixed sigma, or the starting value of a learned one; null (auto): 0.1 for images (pixels in "
        "[0, 1]), 1 for vectors (standardised features)",
        gt=0,
    )
    min_sigma: float = key(0.001, "the floor of a learned sigma", gt=0)


@option("loss", "logistic")
@dataclass
class LogisticConfig(LossConfig):
    """Discretised logistic likelihood for 8-bit pixels (PixelCNN++'s), or a mixture of them: a proper
    discrete likelihood of the 8-bit data (uint8 pixels, dataset.binarize=none; other data is refused),
    whose -log p(x) is a code length of the image, so vae evaluate's bits/dim compare with published ones.
    For vae score score=complexity on images."""

    name: str = key("logistic", NAME)
    scale: str = choice(
        "pixel",
        "pixel: the decoder predicts each pixel's scale (each component's) | global: one learned scale, "
        "shared by the components",
        "pixel",
        "global",
    )
    components: int = key(
        1,
        "logistics in each pixel's mixture (per channel), with weights from the decoder; 1: a single "
        "discretised logistic. The decoder gives 3 * components values per pixel and channel (2 with "
        "scale=global; 2 and 1 at components=1)",
        min=1,
    )
    init_scale: float = key(0.05, "global: the starting value of the learned scale", gt=0)
    min_scale: float = key(1e-4, "the floor of the scale (pixels in [0, 1])", gt=0)
