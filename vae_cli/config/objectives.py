"""The `objective` group: one schema per training objective (`vae train objective=<name>`).

Only iwae has `k`; code that serves both reads it as `cfg.objective.get("k", 1)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from vae_cli.config.fields import GroupBase, key, option

NAMES = ("elbo", "iwae")
NAME = "the training objective, chosen with objective=<name>"
#: Each training step decodes k x train.batch_size images: Burda et al. (2015) train with k up to 50;
#: 10000 (x 128 images = 1.28 M decodes a step) is far past where a larger k still helps
K_MAX = 10000


@dataclass
class ObjectiveConfig(GroupBase):
    """The keys every objective has."""

    group = "objective"

    name: str = key(MISSING, NAME, choices=NAMES, ignore_case=True)


@option("objective", "elbo")
@dataclass
class ElboConfig(ObjectiveConfig):
    """The (beta-weighted) evidence lower bound: reconstruction + beta * KL."""

    name: str = key("elbo", NAME, choices=NAMES, ignore_case=True)


@option("objective", "iwae")
@dataclass
class IwaeConfig(ObjectiveConfig):
    """The importance-weighted bound (Burda et al. 2015) with k samples per example: tighter than the
    ELBO; k=1 is the ELBO."""

    name: str = key("iwae", NAME, choices=NAMES, ignore_case=True)
    k: int = key(
        5,
        "importance samples per example",
        min=1,
        lt=K_MAX + 1,
        rule=f"must be in [1, {K_MAX}]",
    )
