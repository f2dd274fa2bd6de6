"""The `objective` group: one schema per training objective (`vae train objective=<name>`).

Only iwae has `k`; code that serves both reads it as `cfg.objective.get("k", 1)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from vae_cli.config.fields import OPTIONS, GroupBase, key, option
from vae_cli.errors import ConfigError

NAMES = ("elbo", "iwae", "factor", "ae", "btcvae", "dip", "capacity", "mmd", "vq")
NAME = "the training objective, chosen with objective=<name>"
#: Each training step decodes k x train.batch_size images: Burda et al. (2015) train with k up to 50;
#: 10000 (x 128 images = 1.28 M decodes a step) is far past where a larger k still helps
K_MAX = 10000


@dataclass
class ObjectiveConfig(GroupBase):
    """The keys every objective has."""

    group = "objective"

    name: str = key(MISSING, NAME, choices=NAMES, ignore_case=True)

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        """Refuse (ConfigError) the run's other choices (`cfg`, the whole training config) that this
        objective cannot serve; most serve every one."""


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


@option("objective", "factor")
@dataclass
class FactorConfig(ObjectiveConfig):
    """FactorVAE (Kim & Mnih 2018): the ELBO plus gamma times the total correlation of q(z), estimated
    by a discriminator trained beside the VAE (its own Adam, betas (0.5, 0.9)) to tell codes from codes
    whose dimensions were shuffled across the batch."""

    name: str = key("factor", NAME, choices=NAMES, ignore_case=True)
    gamma: float = key(
        10.0, "the weight of the total-correlation penalty (the paper sweeps 10 to 100)", min=0
    )
    hidden: int = key(1000, "the discriminator's units per hidden layer (the paper's: 1000)", min=1)
    layers: int = key(6, "the discriminator's hidden layers (the paper's: 6)", min=1)
    lr: float = key(1e-4, "the discriminator's learning rate (Adam, betas (0.5, 0.9))", gt=0)


@option("objective", "ae")
@dataclass
class AeConfig(ObjectiveConfig):
    """The plain autoencoder: deterministic codes z = the posterior's mean, no noise and no KL; the loss
    is the reconstruction alone (-log p(x|z)). With train.denoise, the denoising autoencoder (Vincent
    et al. 2008). `vae sample` draws its codes from a Gaussian fitted to the training codes."""

    name: str = key("ae", NAME, choices=NAMES, ignore_case=True)

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        if cfg.train.free_bits > 0:
            raise ConfigError(
                f"train.free_bits={cfg.train.free_bits} floors the KL, and objective=ae has none: leave "
                f"train.free_bits=0"
            )
        if cfg.prior.name != "standard":
            raise ConfigError(
                f"prior={cfg.prior.name}: objective=ae has no prior (no KL; its samples come from a Gaussian "
                f"fitted to the training codes): leave prior=standard"
            )


# --- the disentangling objectives (vae_cli/objectives.py has their maths) ----------------------------------

#: DIP-VAE's default diagonal weight, lambda_d = factor * lambda_od (Kumar et al. 2018): 10 for DIP-VAE-I,
#: 1 for DIP-VAE-II
DIP_DIAGONAL_FACTOR = {"i": 10.0, "ii": 1.0}


def _needs(cfg: DictConfig, name: str, why: str, **groups: str) -> None:
    """Refuse objective `name` unless each of `groups` (e.g. posterior="gaussian") is the one named."""
    wrong = [f"{group}={cfg[group].name}" for group, needed in groups.items() if cfg[group].name != needed]
    if wrong:
        needed = " ".join(f"{group}={option}" for group, option in groups.items())
        raise ConfigError(f"objective={name} {why}: it needs {needed}, and this run has {', '.join(wrong)}")


def _no_free_bits(cfg: DictConfig, name: str) -> None:
    if cfg.train.free_bits > 0:
        raise ConfigError(
            f"train.free_bits={cfg.train.free_bits} floors the ELBO's KL term, which objective={name} "
            f"replaces with its own: leave train.free_bits=0"
        )


@option("objective", "btcvae")
@dataclass
class BtcvaeConfig(ObjectiveConfig):
    """beta-TCVAE (Chen et al. 2018): the KL split into the index-code mutual information, the total
    correlation of q(z) and the dimension-wise KL, each weighted on its own (alpha, beta, gamma; all 1 is
    the ELBO), q(z) and its marginals estimated on the batch by minibatch stratified or weighted
    sampling. Needs the Gaussian posterior with the standard prior."""

    name: str = key("btcvae", NAME, choices=NAMES, ignore_case=True)
    alpha: float = key(1.0, "the weight of the index-code mutual information I(x; z)", min=0)
    beta: float = key(
        6.0,
        "the weight of the total correlation KL(q(z) || prod_j q(z_j)) (not the top-level beta, which "
        "scales the whole KL); 6 is mid-range of the 1 to 10 disentanglement_lib sweeps",
        min=0,
    )
    gamma: float = key(1.0, "the weight of the dimension-wise KL sum_j KL(q(z_j) || p(z_j))", min=0)
    estimator: str = key(
        "mss",
        "how q(z) is estimated on a batch of M from the N training examples: mss (stratified: the code's "
        "own posterior weighted 1/N, the M - 1 others (N - 1) / (N (M - 1)): exact for a factorised q) or "
        "mws (minibatch-weighted, as published: every posterior 1 / (N M), the batch's mean shifted by "
        "-log N: no gradient changes, but MI, TC and the dimension-wise KL read log N, (d - 1) log N and "
        "-d log N high or low at a factorised q)",
        choices=("mss", "mws"),
    )
    dataset_size: int | None = key(
        None,
        "N, the training examples the estimator weighs the batch by; null (auto): the training split's size",
        min=1,
        rule="must be at least 1, or null for automatic",
    )

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        why = (
            "estimates q(z) from the Gaussian densities log q(z_i|x_j) and splits the KL per dimension of "
            "N(0, I)"
        )
        _needs(cfg, "btcvae", why, posterior="gaussian", prior="standard")


@option("objective", "dip")
@dataclass
class DipConfig(ObjectiveConfig):
    """DIP-VAE (Kumar et al. 2018): the ELBO plus a penalty pulling the covariance of the codes toward the
    identity, the prior's: that of the posterior means mu(x) (variant i), or of z under the aggregate
    posterior, E_x[diag sigma^2(x)] + Cov_x[mu(x)] (variant ii). Needs the Gaussian posterior."""

    name: str = key("dip", NAME, choices=NAMES, ignore_case=True)
    variant: str = key("i", "i: the covariance of mu(x); ii: that of z, E[Cov] + Cov[E]", choices=("i", "ii"))
    lambda_od: float = key(10.0, "the weight of the covariance's squared off-diagonal entries", min=0)
    lambda_d: float | None = key(
        None,
        "the weight of the squared distances of its diagonal entries to 1; null: the paper's, "
        "10 * lambda_od for variant i, lambda_od for ii",
        min=0,
    )

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        why = "reads the posterior's mean and covariance, mu(x) and diag sigma^2(x), which a flow lacks"
        _needs(cfg, "dip", why, posterior="gaussian")


@option("objective", "capacity")
@dataclass
class CapacityConfig(ObjectiveConfig):
    """The capacity-annealed beta-VAE (Burgess et al. 2018): recon + gamma * |KL - C|, the batch's mean
    KL held near a target C that grows linearly from 0 to `capacity` nats over `capacity_steps`
    optimisation steps, so that the code takes in information gradually. Validation and test use
    C = capacity."""

    name: str = key("capacity", NAME, choices=NAMES, ignore_case=True)
    capacity: float = key(25.0, "C at the end of the annealing, nats (the paper's for dSprites: 25)", min=0)
    capacity_steps: int | None = key(
        None,
        "optimisation steps over which C grows from 0 to capacity (the paper: 100000); 0: C = capacity "
        "from the first step; null (auto): the whole run, train.epochs x the steps of an epoch",
        min=0,
        rule="must be >= 0, or null for automatic",
    )
    gamma: float = key(
        1000.0,
        "the weight of |KL - C| (the paper's for dSprites, with a reconstruction summed over pixels as here)",
        min=0,
    )

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        _no_free_bits(cfg, "capacity")


@option("objective", "mmd")
@dataclass
class MmdConfig(ObjectiveConfig):
    """InfoVAE / WAE-MMD (Zhao et al. 2019; Tolstikhin et al. 2018): recon + lambda_mmd * MMD(q(z), p(z)),
    the maximum mean discrepancy between the batch's codes and as many prior draws (the unbiased
    U-statistic), + (1 - alpha) * KL, InfoVAE's weight on the ELBO's KL (alpha = 1, the default: none,
    WAE-MMD). Its loss is not a bound on log p(x)."""

    name: str = key("mmd", NAME, choices=NAMES, ignore_case=True)
    lambda_mmd: float = key(
        1000.0,
        "the weight of the MMD (`lambda` in the papers; a Python keyword cannot name a key): MMD values "
        "are O(0.01-1) against a reconstruction summed over pixels, hence large",
        min=0,
    )
    alpha: float = key(
        1.0,
        "InfoVAE's alpha: the KL is weighted 1 - alpha (1: no KL, WAE-MMD; 0: the whole ELBO plus the MMD)",
        min=0,
        rule="must be in [0, 1]",
        check=(lambda v: v <= 1, "must be in [0, 1]"),
    )
    kernel: str = key(
        "imq",
        "the MMD's kernel: imq, C / (C + |z - z'|^2) (WAE's choice, heavier tails), or rbf, exp(-|z - z'|^2 / C)",
        choices=("imq", "rbf"),
    )
    scale: float = key(
        1.0,
        "sigma^2 in the kernels' C = 2 * latent_dim * sigma^2 (WAE's, with the prior's variance: 1)",
        gt=0,
    )
    #: what `vae evaluate` says of the numbers it prints for such a model
    not_a_bound = (
        "objective=mmd trained recon + lambda_mmd * MMD (+ (1 - alpha) * KL), not a bound on log p(x): "
        "these numbers still bound -log p(x) under its decoder and prior, but its encoder was not fitted "
        "to the posterior, so they are loose and compare with no VAE's"
    )

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        _no_free_bits(cfg, "mmd")


@option("objective", "vq")
@dataclass
class VqConfig(ObjectiveConfig):
    """model=vqvae's objective (van den Oord et al. 2017), chosen for it automatically: -log p(x|z_q) plus
    the commitment loss (and the codebook loss with model.codebook_update=loss), weighted by the model's
    keys; the KL is constant in training, log K per code under the uniform prior of stage one."""

    name: str = key("vq", NAME, choices=NAMES, ignore_case=True)

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        if cfg.model.name != "vqvae":
            raise ConfigError(
                f"objective=vq trains model=vqvae's encoder and codebook, and this run has "
                f"model={cfg.model.name}: use model=vqvae, or another objective"
            )


def not_a_bound(name: str) -> str | None:
    """Why the bounds `vae evaluate` prints do not measure what objective `name` trained, or None."""
    return getattr(OPTIONS["objective"].get(name), "not_a_bound", None)


def validate_objective(cfg: DictConfig) -> None:
    """The objective's combinations with the other training keys that no single key's rules refuse."""
    schema = OPTIONS["objective"].get(cfg.objective.name)
    if schema is not None:
        schema.check_run(cfg)
