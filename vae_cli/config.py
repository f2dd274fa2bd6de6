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
from omegaconf import MISSING, DictConfig

from vae_cli.errors import ConfigError


@dataclass
class DatasetConfig:
    name: str = MISSING
    image_size: int = 28  # height = width after loading
    channels: int = 1
    binarize: str = "none"  # none | static | dynamic
    val_size: int = 5000  # carved from the training split with a fixed seed
    test_size: int = 0  # datasets without a test split (synthetic) carve one too
    size: int = 0  # synthetic only: number of images generated
    download: bool = True
    in_memory: str = "auto"  # auto | true | false
    crop: int = 0  # CelebA: centre crop before the resize (0: none)
    seed: int = 0  # the data's own seed: synthetic generation, the val split, static binarisation


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


@dataclass
class TrainAppConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    latent_dim: int = 16
    beta: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    data_dir: str = "data"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="loss", name="loss_schema", node=LossConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda", "mps"),
    "dataset.binarize": ("none", "static", "dynamic"),
    "dataset.in_memory": ("auto", "true", "false"),
    "loss.variance": ("fixed", "global", "pixel"),
    "train.optimizer": ("adam", "adamw"),
    "train.precision": ("32", "bf16-mixed", "16-mixed"),
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
    ]
    for key in non_negative:
        value = _get(cfg, key)
        _check(math.isfinite(value) and value >= 0, key, value, "must be >= 0")
    _check(math.isfinite(cfg.train.lr) and cfg.train.lr > 0, "train.lr", cfg.train.lr, "must be > 0")
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
