"""The `posterior` group: one schema per family of q(z|x) (`vae train posterior=<name>`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from vae_cli.config.fields import GroupBase, key, option

NAME = "the approximate posterior q(z|x), chosen with posterior=<name>"


@dataclass
class PosteriorConfig(GroupBase):
    """The keys every posterior has."""

    group = "posterior"

    name: str = key(MISSING, NAME)


@option("posterior", "gaussian")
@dataclass
class GaussianPosteriorConfig(PosteriorConfig):
    """A diagonal Gaussian N(mu(x), diag(sigma^2(x))), the encoder's output."""

    name: str = key("gaussian", NAME)


@option("posterior", "iaf")
@dataclass
class IafPosteriorConfig(PosteriorConfig):
    """Inverse autoregressive flow (Kingma et al. 2016): the Gaussian's draw passed through `steps`
    autoregressive steps (MADE networks conditioned on the encoder's mu and log sigma^2); log q(z|x) is
    exact, the KL is estimated from the draws."""

    name: str = key("iaf", NAME)
    steps: int = key(2, "the flow's steps", min=1)
    hidden: int = key(128, "the hidden units of each step's autoregressive network", min=1)
