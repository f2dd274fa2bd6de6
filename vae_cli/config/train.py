"""`vae train`'s schema: the top-level keys, `train.*`, and one section per config group."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig

from vae_cli.config.data import DatasetConfig, seed_key, validate_own_data
from vae_cli.config.fields import OPTIONS, check, check_node, choice, key
from vae_cli.config.likelihoods import LossConfig
from vae_cli.config.models import ModelConfig
from vae_cli.config.objectives import ObjectiveConfig, validate_objective
from vae_cli.config.posteriors import PosteriorConfig, validate_posterior
from vae_cli.config.priors import PriorConfig
from vae_cli.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
NON_NEGATIVE = "must be >= 0"


def device_key() -> str:
    return key("auto", "where to run: auto picks cuda, else mps, else cpu", choices=DEVICES, ignore_case=True)


@dataclass
class TrainConfig:
    epochs: int | None = key(
        None,
        "passes over the training data; null (auto): 10 for images, enough for about 2000 steps on a "
        "table (10 to 500)",
        min=1,
        rule="must be at least 1, or null for automatic",
    )
    batch_size: int = key(128, "images per optimisation step (split across the ranks of a DDP run)", min=1)
    lr: float = key(1e-3, "the learning rate", gt=0)
    optimizer: str = key("adam", "the optimiser", choices=("adam", "adamw"), ignore_case=True)
    weight_decay: float = key(0.0, "weight decay (decoupled with adamw)", min=0)
    grad_clip: float = key(0.0, "the largest global gradient norm; 0 disables clipping", min=0)
    kl_warmup_epochs: float = key(0.0, "beta ramps linearly from 0 over this many epochs", min=0)
    num_workers: int | None = key(
        None,
        "DataLoader workers for on-disk data; null picks from the core count",
        min=0,
        rule="must be >= 0, or null for automatic",
    )
    precision: str = choice(
        "32",
        "the floating-point precision of training; 16-mixed needs a CUDA device",
        "32",
        "bf16-mixed",
        "16-mixed",
    )
    compile: bool = key(False, "torch.compile the model")
    image_every: int = key(1, "epochs between image grids in TensorBoard; 0 disables them", min=0)
    log_every: int = key(50, "steps between scalar logs and progress-bar loss updates", min=1)
    resume: str | None = key(
        None, "a checkpoint to continue from, e.g. outputs/train/<date>/<time>/checkpoints/last.ckpt"
    )
    skip_nonfinite: int = key(
        0, "skip up to this many steps whose loss or gradient is NaN/inf; 0 stops at the first", min=0
    )
    denoise: str = choice(
        "none",
        "a denoising VAE: train on corrupted inputs (gaussian noise or a pixel mask), score the clean ones",
        "none",
        "gaussian",
        "mask",
    )
    noise_level: float = key(
        0.0, "gaussian: the noise's std (pixels in [0, 1]) | mask: the share of pixels zeroed", min=0
    )
    free_bits: float = key(
        0.0,
        "nats: each latent dimension's batch-mean KL counts at least this much in the loss (0: off)",
        min=0,
    )
    scheduler: str = choice(
        "none",
        "the lr schedule: cosine decays it per step to min_lr, plateau halves it when the val loss stalls",
        "none",
        "cosine",
        "plateau",
    )
    min_lr: float = key(0.0, "cosine: the final learning rate", min=0)
    plateau_factor: float = key(
        0.5, "plateau: the lr multiplier after plateau_patience epochs without a better val loss", gt=0, lt=1
    )
    plateau_patience: int = key(2, "plateau: epochs without a better val loss before the lr drops", min=0)
    early_stop_patience: int | None = key(
        None,
        "stop after this many epochs without a better val loss; 0 never stops early; null (auto): 0 for "
        "images, 20 for tables with a validation split",
        min=0,
        rule="must be >= 0, or null for automatic",
    )
    trim: float | None = key(
        None,
        "robust training: the share of each batch's highest-loss examples left out of the loss, so that "
        "anomalies in the training data are not learnt; null (auto): 0 for images, 0.2 for tables",
        min=0,
        lt=1,
        rule="must be in [0, 1), or null for automatic",
    )
    ema: float = key(
        0.0,
        "decay of an exponential moving average of the weights, used for evaluation and the checkpoints",
        min=0,
        lt=1,
        rule="must be in [0, 1), e.g. 0.999 (0 disables)",
    )
    background: bool = key(
        False,
        "also train a background model on perturbed inputs, into <run>/background/, for vae score "
        "score=likelihood_ratio (Ren et al. 2019); image data only",
    )
    background_noise: float = key(
        0.2,
        "background: each pixel is replaced by a random value with this probability (Ren et al.: 0.1-0.3)",
        gt=0,
        lt=1,
    )


@dataclass
class TrainAppConfig:
    dataset: DatasetConfig = key(MISSING, "the data: dataset=<name> chooses its schema")
    model: ModelConfig = key(MISSING, "the architecture: model=<name>")
    prior: PriorConfig = key(MISSING, "the prior p(z): prior=<name>")
    posterior: PosteriorConfig = key(MISSING, "the approximate posterior q(z|x): posterior=<name>")
    loss: LossConfig = key(MISSING, "the likelihood p(x|z): loss=<name>")
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = key(MISSING, "the training objective: objective=<name>")
    latent_dim: int | None = key(
        None,
        "dimensions of the latent code z; null (auto): 16 for images, below the number of features for "
        "vectors (D/4 rounded up, at most 16); with posterior=categorical, that many variables of "
        "posterior.classes one-hot values each",
        min=1,
        rule="must be at least 1, or null for automatic",
    )
    beta: float = key(1.0, "the weight of the KL term; 1 is the ELBO, > 1 a beta-VAE", min=0)
    seed: int = seed_key(0, "seeds the weights, the batches and the draws")
    device: str = device_key()
    data_dir: str = key(
        "${oc.env:VAE_DATA_DIR,data}", "where datasets are read and downloaded to: $VAE_DATA_DIR, else data"
    )


def validate_train_config(cfg: DictConfig) -> None:
    """Check ranges, choices and combinations that types alone cannot express. Raises ConfigError."""
    check_node(cfg, "", TrainAppConfig)
    validate_own_data(cfg.dataset)
    validate_denoise(cfg.train.denoise, cfg.train.noise_level, "train.")
    validate_model(cfg)  # an architecture's own combinations first (model=vqvae: no prior, no posterior)
    validate_posterior(cfg)  # before the objective's: it says which objective a posterior trains with
    validate_objective(cfg)
    if cfg.model.get("conditional"):
        validate_conditional(cfg.model.name, cfg.prior.name)
    if cfg.dataset.name == "tensor" and cfg.dataset.get("standardize") and cfg.loss.name == "bernoulli":
        raise ConfigError(
            "dataset.standardize=true gives values outside [0, 1], which loss=bernoulli cannot model: "
            "use loss=gaussian (e.g. loss.variance=global)"
        )


def validate_model(cfg: DictConfig) -> None:
    """The architecture's combinations with the other training keys: its schema's `check_run`, where it
    has one (model=vqvae's: its objective, no prior or posterior to choose, no KL to weigh)."""
    check_run = getattr(OPTIONS["model"].get(cfg.model.name), "check_run", None)
    if check_run is not None:
        check_run(cfg)


#: model.conditional=true: the priors that encode label-free pseudo-inputs, and the models of another seam
LABEL_FREE_PRIORS, NOT_CONDITIONAL = ("vamp",), ("vqvae",)


def validate_conditional(model: str, prior: str) -> None:
    """model.conditional=true's combinations (vae_cli/models/conditional.py). Raises ConfigError."""
    if model in NOT_CONDITIONAL:
        raise ConfigError(f"model={model} has no conditional form: drop model.conditional=true")
    if prior in LABEL_FREE_PRIORS:
        raise ConfigError(
            f"prior={prior} encodes pseudo-inputs, which have no label, and model.conditional=true's "
            f"encoder needs one: use prior=standard or prior=mog"
        )


def validate_denoise(kind: str, level: float, prefix: str = "") -> None:
    """`denoise` and `noise_level` must agree: noise needs a kind, a kind needs noise."""
    check(math.isfinite(level) and level >= 0, f"{prefix}noise_level", level, NON_NEGATIVE)
    if kind == "mask":
        check(level < 1, f"{prefix}noise_level", level, "is the share of pixels zeroed: must be < 1")
    if kind != "none" and level == 0:
        raise ConfigError(f"{prefix}denoise={kind} needs noise: set {prefix}noise_level, e.g. 0.3")
    if kind == "none" and level > 0 and prefix == "train.":
        raise ConfigError(
            f"train.noise_level={level} has no effect with train.denoise=none: set train.denoise=gaussian or mask"
        )
