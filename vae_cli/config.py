"""Dataclass schemas for every config, registered with Hydra's ConfigStore.

Hydra merges the YAML files in `conf/` into these typed nodes, so a wrong type (`latent_dim=abc`) or a
misspelt key (`latnt_dim=8`) fails at composition. Ranges and choices are checked by `validate_*`
before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from vae_cli.errors import ConfigError


@dataclass
class DatasetConfig:
    name: str = MISSING
    image_size: int = 28  # height = width after loading
    channels: int = 1
    binarize: str = "none"  # none | static | dynamic
    val_size: int = 1000  # carved from the training split with a fixed seed
    test_size: int = 0  # datasets without a test split (synthetic) carve one too
    size: int = 0  # synthetic only: number of images generated
    download: bool = True
    in_memory: str = "auto"  # auto | true | false
    crop: int = 0  # CelebA: centre crop before the resize (0: none)
    seed: int = 0  # the data's own seed: synthetic generation, the val split, static binarisation
    path: str | None = None  # image_folder: the folder; tensor: the file (.npy, .npz, .pt, .csv)
    val_fraction: float = 0.1  # image_folder, tensor: share of the examples held out for validation
    test_fraction: float = 0.1  # image_folder, tensor: share held out for test (split with dataset.seed)
    label_column: str | None = None  # tensor: the CSV column (or .npz/.pt key) holding labels
    standardize: bool = False  # tensor: scale each feature to mean 0, std 1 (the train split's statistics)
    exclude_classes: list[str] = field(default_factory=list)  # labels left out of train and val (not test)


@dataclass
class ModelConfig:
    name: str = MISSING
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256])  # mlp
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # conv
    kernel_size: int = 4  # conv
    activation: str = "relu"


@dataclass
class LossConfig:
    name: str = MISSING
    variance: str = "fixed"  # gaussian: fixed | global | pixel
    sigma: float = 0.1  # gaussian: the fixed sigma, or the initial one when learned
    min_sigma: float = 1e-3  # gaussian: floor for a learned sigma


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    kl_warmup_epochs: float = 0.0  # beta ramps linearly from 0 over this many epochs
    num_workers: int | None = None  # DataLoader workers; null picks from the core count
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    compile: bool = False
    image_every: int = 1  # epochs between image grids in TensorBoard; 0 disables
    log_every: int = 50  # steps between scalar logs and progress-bar loss updates
    resume: str | None = None  # a checkpoint to continue from
    skip_nonfinite: int = 0  # skip up to this many non-finite steps; 0 stops at the first
    denoise: str = "none"  # none | gaussian | mask: train on corrupted inputs, score the clean ones
    noise_level: float = 0.0  # gaussian: the noise's std (pixels in [0, 1]); mask: the share of pixels zeroed
    free_bits: float = (
        0.0  # nats: each latent dimension's batch-mean KL counts at least this much in the loss
    )
    scheduler: str = "none"  # none | cosine (per step, to min_lr) | plateau (halve lr when val loss stalls)
    min_lr: float = 0.0  # cosine: the final learning rate
    plateau_factor: float = (
        0.5  # plateau: lr multiplier when val loss has not improved for plateau_patience epochs
    )
    plateau_patience: int = 2
    early_stop_patience: int = 0  # stop after this many epochs without a better val loss; 0 never stops early
    ema: float = 0.0  # decay of an exponential moving average of the weights used for evaluation; 0 disables


@dataclass
class ObjectiveConfig:
    name: str = "elbo"  # elbo | iwae
    k: int = 1  # iwae: importance samples per example


@dataclass
class TrainAppConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    latent_dim: int = 16
    beta: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    data_dir: str = "data"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    _register_command_configs(cs)


CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda", "mps"),
    "dataset.binarize": ("none", "static", "dynamic"),
    "dataset.in_memory": ("auto", "true", "false"),
    "loss.variance": ("fixed", "global", "pixel"),
    "train.optimizer": ("adam", "adamw"),
    "train.precision": ("32", "bf16-mixed", "16-mixed"),
    "train.denoise": ("none", "gaussian", "mask"),
    "train.scheduler": ("none", "cosine", "plateau"),
    "objective.name": ("elbo", "iwae"),
}


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is invalid: {rule} (override it, e.g. `{key}=<value>`)")


def validate_train_config(cfg: DictConfig) -> None:
    """Check ranges and choices that types alone cannot express. Raises ConfigError."""
    for key, allowed in CHOICES.items():
        value = str(_get(cfg, key)).lower()
        _check(value in allowed, key, value, f"choose one of {', '.join(allowed)}")
    positive_ints = [
        "latent_dim",
        "train.epochs",
        "train.batch_size",
        "dataset.image_size",
        "dataset.channels",
        "objective.k",
    ]
    for key in positive_ints:
        _check(_get(cfg, key) >= 1, key, _get(cfg, key), "must be at least 1")
    non_negative = [
        "beta",
        "train.weight_decay",
        "train.grad_clip",
        "train.kl_warmup_epochs",
        "train.image_every",
        "dataset.val_size",
        "dataset.test_size",
        "dataset.size",
        "dataset.crop",
        "train.free_bits",
        "train.min_lr",
        "train.early_stop_patience",
        "train.plateau_patience",
    ]
    for key in non_negative:
        value = _get(cfg, key)
        _check(math.isfinite(value) and value >= 0, key, value, "must be >= 0")
    _check(math.isfinite(cfg.train.lr) and cfg.train.lr > 0, "train.lr", cfg.train.lr, "must be > 0")
    _check(0 <= cfg.train.ema < 1, "train.ema", cfg.train.ema, "must be in [0, 1), e.g. 0.999 (0 disables)")
    _check(
        0 < cfg.train.plateau_factor < 1,
        "train.plateau_factor",
        cfg.train.plateau_factor,
        "must be in (0, 1)",
    )
    _check(cfg.train.skip_nonfinite >= 0, "train.skip_nonfinite", cfg.train.skip_nonfinite, "must be >= 0")
    _check(cfg.train.log_every >= 1, "train.log_every", cfg.train.log_every, "must be at least 1")
    nw = cfg.train.num_workers
    _check(nw is None or nw >= 0, "train.num_workers", nw, "must be >= 0, or null for automatic")
    _check(cfg.loss.sigma > 0, "loss.sigma", cfg.loss.sigma, "must be > 0")
    _check(cfg.loss.min_sigma > 0, "loss.min_sigma", cfg.loss.min_sigma, "must be > 0")
    _check(cfg.dataset.channels in (1, 3), "dataset.channels", cfg.dataset.channels, "must be 1 or 3")
    for key in ("model.hidden_dims", "model.channels"):
        dims = list(_get(cfg, key))
        _check(
            len(dims) > 0 and all(d >= 1 for d in dims), key, dims, "must be a non-empty list of sizes >= 1"
        )
    _check(cfg.model.kernel_size >= 2, "model.kernel_size", cfg.model.kernel_size, "must be at least 2")
    validate_own_data(cfg.dataset)
    validate_denoise(cfg.train.denoise, cfg.train.noise_level, "train.")
    if cfg.dataset.name == "tensor" and cfg.dataset.standardize and cfg.loss.name == "bernoulli":
        raise ConfigError(
            "dataset.standardize=true gives values outside [0, 1], which loss=bernoulli cannot model: "
            "use loss=gaussian (e.g. loss.variance=global)"
        )


def validate_own_data(ds: DictConfig) -> None:
    """The keys of dataset=image_folder and dataset=tensor."""
    for key in ("val_fraction", "test_fraction"):
        value = ds[key]
        _check(math.isfinite(value) and 0 <= value < 1, f"dataset.{key}", value, "must be in [0, 1)")
    total = ds.val_fraction + ds.test_fraction
    _check(total < 1, "dataset.val_fraction", ds.val_fraction, f"+ dataset.test_fraction = {total} >= 1")


def validate_denoise(kind: str, level: float, prefix: str = "") -> None:
    """`denoise` and `noise_level` must agree: noise needs a kind, a kind needs noise."""
    _check(math.isfinite(level) and level >= 0, f"{prefix}noise_level", level, "must be >= 0")
    if kind == "mask":
        _check(level < 1, f"{prefix}noise_level", level, "is the share of pixels zeroed: must be < 1")
    if kind != "none" and level == 0:
        raise ConfigError(f"{prefix}denoise={kind} needs noise: set {prefix}noise_level, e.g. 0.3")
    if kind == "none" and level > 0 and prefix == "train.":
        raise ConfigError(
            f"train.noise_level={level} has no effect with train.denoise=none: set train.denoise=gaussian or mask"
        )


# --- sample, reconstruct, evaluate: everything else comes from the checkpoint ---------------------------


@dataclass
class FromCheckpointConfig:
    """Keys shared by the commands that start from a trained model."""

    ckpt: str | None = None  # a .ckpt file, or a run folder (its checkpoints/best.ckpt, else last.ckpt)
    out: str | None = None  # write here instead of the Hydra run folder
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    log_to_run: bool = False  # also write to the training run's tensorboard/
    data_dir: str | None = None  # null: the checkpoint's


@dataclass
class SampleAppConfig(FromCheckpointConfig):
    mode: str = "mean"  # mean | draw | traverse | interpolate
    n: int = 64  # mean/draw: number of prior samples
    nrow: int = 8  # mean/draw: images per row
    temperature: float = 1.0  # mean/draw: z ~ N(0, temperature^2 I)
    save_tensor: bool = False  # also write the images as a .pt tensor
    range: list[float] = field(default_factory=lambda: [-3.0, 3.0])  # traverse: the sweep of each z_j
    steps: int = 11  # traverse/interpolate: columns
    base: str = "zero"  # traverse: zero | image (the first image of `split`, encoded)
    dims: int = 0  # traverse: show the N most informative dimensions (0: all)
    pairs: int = 8  # interpolate: rows
    method: str = "linear"  # interpolate: linear | slerp
    split: str = "test"  # traverse/interpolate: where the images come from


@dataclass
class ReconstructAppConfig(FromCheckpointConfig):
    split: str = "test"  # train | val | test
    n: int = 32  # images from the split
    nrow: int = 8
    input: str | None = None  # an image file or a folder of images, instead of the split
    noise_level: float = 0.0  # corrupt the inputs first (0: clean), to see a denoising VAE clean them
    noise: str | None = None  # gaussian | mask; null: the training run's train.denoise, else gaussian


@dataclass
class EvaluateAppConfig(FromCheckpointConfig):
    split: str = "test"  # train | val | test
    iwae_k: int = 1000  # importance samples for the bound on log p(x)
    batch_size: int = 256  # images encoded at a time
    chunk: int | None = None  # importance samples decoded at a time; null: about 4M decoded values a pass
    max_examples: int = 0  # evaluate only the first N examples of the split (0: all)
    probe: bool = True  # logistic-regression probe on mu, when the dataset has labels
    probe_train_size: int = 20000  # at most this many training examples fit the probe


@dataclass
class ScoreAppConfig(FromCheckpointConfig):
    input: str = "test"  # train | val | test (a split of the training data), or a folder or file (./name)
    iwae_k: int = 0  # 0: score = -ELBO; k > 0: score = -IWAE_k, the tighter estimate of -log p(x)
    elbo_samples: int = 16  # iwae_k=0: draws z ~ q(z|x) averaged in the reconstruction term
    batch_size: int = 256  # examples encoded at a time
    chunk: int | None = None  # importance samples decoded at a time; null: automatic
    max_examples: int = 0  # score only the first N examples (0: all)
    n: int = 8  # the grid shows the n most and the n least anomalous examples
    normal_class: Any = None  # a label or a list of them: every other label is an anomaly
    anomaly_class: Any = None  # a label or a list of them: these are the anomalies
    label_column: str | None = None  # tensor files: the labels' column or key; null: the training data's


def _register_command_configs(cs: ConfigStore) -> None:
    cs.store(name="sample_schema", node=SampleAppConfig)
    cs.store(name="reconstruct_schema", node=ReconstructAppConfig)
    cs.store(name="evaluate_schema", node=EvaluateAppConfig)
    cs.store(name="score_schema", node=ScoreAppConfig)
    # `hydra.run.dir: ${vae_or:${out},'outputs/...'}`: the run folder is `out` when it is given.
    if not OmegaConf.has_resolver("vae_or"):
        OmegaConf.register_new_resolver("vae_or", lambda value, default: default if value is None else value)


SPLITS = ("train", "val", "test")


def _validate_from_checkpoint(cfg: DictConfig, command: str) -> None:
    if not cfg.ckpt:
        raise ConfigError(
            f"ckpt is required: vae {command} ckpt=outputs/train/<date>/<time> "
            f"(a training run folder or a .ckpt file)"
        )
    allowed = CHOICES["device"]
    _check(str(cfg.device).lower() in allowed, "device", cfg.device, f"choose one of {', '.join(allowed)}")


def validate_sample_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "sample")
    choices = {
        "mode": ("mean", "draw", "traverse", "interpolate"),
        "base": ("zero", "image"),
        "method": ("linear", "slerp"),
        "split": SPLITS,
    }
    for key, allowed in choices.items():
        _check(cfg[key] in allowed, key, cfg[key], f"choose one of {', '.join(allowed)}")
    for key in ("n", "nrow", "pairs"):
        _check(cfg[key] >= 1, key, cfg[key], "must be at least 1")
    _check(cfg.steps >= 2, "steps", cfg.steps, "must be at least 2")
    _check(cfg.dims >= 0, "dims", cfg.dims, "must be >= 0 (0 shows every dimension)")
    t = cfg.temperature
    _check(math.isfinite(t) and t > 0, "temperature", t, "must be > 0")
    r = list(cfg.range)
    _check(
        len(r) == 2 and all(math.isfinite(v) for v in r) and r[0] < r[1],
        "range",
        r,
        "must be two finite numbers [low,high] with low < high, e.g. range=[-3,3]",
    )


def validate_reconstruct_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "reconstruct")
    _check(cfg.split in SPLITS, "split", cfg.split, f"choose one of {', '.join(SPLITS)}")
    for key in ("n", "nrow"):
        _check(cfg[key] >= 1, key, cfg[key], "must be at least 1")
    noises = ("gaussian", "mask")
    _check(cfg.noise is None or cfg.noise in noises, "noise", cfg.noise, "choose one of gaussian, mask")
    if cfg.noise_level != 0:
        validate_denoise(cfg.noise or "gaussian", cfg.noise_level)


def validate_evaluate_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "evaluate")
    _check(cfg.split in SPLITS, "split", cfg.split, f"choose one of {', '.join(SPLITS)}")
    for key in ("iwae_k", "batch_size", "probe_train_size"):
        _check(cfg[key] >= 1, key, cfg[key], "must be at least 1")
    _check(cfg.chunk is None or cfg.chunk >= 1, "chunk", cfg.chunk, "must be >= 1, or null for automatic")
    _check(cfg.max_examples >= 0, "max_examples", cfg.max_examples, "must be >= 0 (0: the whole split)")


def validate_score_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "score")
    _check(bool(str(cfg.input).strip()), "input", cfg.input, "pass train|val|test, a folder or a file")
    for key in ("elbo_samples", "batch_size", "n"):
        _check(cfg[key] >= 1, key, cfg[key], "must be at least 1")
    _check(cfg.iwae_k >= 0, "iwae_k", cfg.iwae_k, "must be >= 0 (0 scores by -ELBO)")
    _check(cfg.chunk is None or cfg.chunk >= 1, "chunk", cfg.chunk, "must be >= 1, or null for automatic")
    _check(cfg.max_examples >= 0, "max_examples", cfg.max_examples, "must be >= 0 (0: all)")
    for key in ("normal_class", "anomaly_class"):
        value = cfg[key]
        values = list(value) if isinstance(value, ListConfig | list) else [value]
        _check(
            value is None or all(isinstance(v, int | str) and not isinstance(v, bool) for v in values),
            key,
            value,
            "must be a label or a list of labels, e.g. 9 or [7,9] or cats",
        )
    if cfg.normal_class is not None and cfg.anomaly_class is not None:
        raise ConfigError("give normal_class or anomaly_class, not both: the other is every remaining label")
