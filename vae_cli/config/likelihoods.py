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


@option("loss", "bernoulli")
@dataclass
class BernoulliConfig(LossConfig):
    """Bernoulli likelihood (BCE with logits), for binary or [0, 1] pixels."""

    name: str = key("bernoulli", NAME)


@option("loss", "gaussian")
@dataclass
class GaussianConfig(LossConfig):
    """Gaussian likelihood, for continuous pixels (or standardised features)."""

    name: str = key("gaussian", NAME)
    variance: str = choice(
        "global",
        "fixed: sigma below | global: one learned sigma | pixel: the decoder predicts each pixel's sigma",
        "fixed",
        "global",
        "pixel",
    )
    sigma: float = key(0.1, "the fixed sigma, or the starting value of a learned one", gt=0)
    min_sigma: float = key(0.001, "the floor of a learned sigma", gt=0)
