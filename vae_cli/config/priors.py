"""The `prior` group: one schema per prior p(z) (`vae train prior=<name>`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from vae_cli.config.fields import GroupBase, key, option

NAME = "the prior p(z), chosen with prior=<name>"


@dataclass
class PriorConfig(GroupBase):
    """The keys every prior has."""

    group = "prior"

    name: str = key(MISSING, NAME)


@option("prior", "standard")
@dataclass
class StandardPriorConfig(PriorConfig):
    """N(0, I): no parameters; its KL to the Gaussian posterior is in closed form."""

    name: str = key("standard", NAME)


@option("prior", "mog")
@dataclass
class MogPriorConfig(PriorConfig):
    """A learned mixture of diagonal Gaussians: weights, means and log-variances trained with the model."""

    name: str = key("mog", NAME)
    components: int = key(10, "the mixture's Gaussians", min=1)


@option("prior", "vamp")
@dataclass
class VampPriorConfig(PriorConfig):
    """The VampPrior (Tomczak & Welling 2018): a uniform mixture of the encoder's Gaussian posteriors of
    learned pseudo-inputs, which live in data space."""

    name: str = key("vamp", NAME)
    pseudo_inputs: int = key(
        100, "the learned pseudo-inputs, one mixture component each (the paper: 500)", min=1
    )


@option("prior", "uniform")
@dataclass
class UniformPriorConfig(PriorConfig):
    """The uniform categorical prior of posterior=categorical: each of its latent_dim / posterior.classes
    variables uniform over the classes, log p(z) = -N log K for every one-hot code; no parameters, the KL
    in closed form. It takes posterior=categorical only."""

    name: str = key("uniform", NAME)
