"""The automatic defaults: keys left at null ("auto") get a value that fits the data, once its shape is known.

Images keep the defaults they always had. Vectors, tables of (N, D) features (held as 1x1xD), get their
own: an MLP sized from D, standardised features, a Gaussian whose noise level is learned per feature,
dropout, a trimmed (robust) loss, enough epochs for small data and early stopping. `AUTO_KEYS` lists
them; docs/own-data.md explains each.

`vae train` calls `resolve_auto` once, right after the dataset is built (vae_cli/training/loop.py), and
writes what it picks into the run's config: the checkpoint holds the resolved values, so every command
that rebuilds the model from it (sample, reconstruct, evaluate, score, load_model) builds the same one. A
key the user set (on the command line, or a recipe) is never replaced. `dataset.standardize` is decided
here too, by `standardize_default`, but the dataset builder applies it (it needs the data's shape before
it can standardise); `resolve_auto` then records the choice.

No torch here: the config package stays light.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vae_cli.config.fields import OPTIONS
from vae_cli.config.posteriors import entries_per_variable
from vae_cli.errors import ConfigError

log = logging.getLogger("vae")

Shape = tuple[int, int, int]

#: key -> (images' value, vectors' value in words), for messages and docs
AUTO_KEYS: dict[str, tuple[str, str]] = {
    "model": ("conv", "mlp"),
    "model.hidden_dims": ("[512, 256]", "[h, h/2], h = 2D rounded up to a power of 2, in [32, 256]"),
    "model.dropout": ("0", "0.1"),
    "latent_dim": (
        "16 (times posterior.classes with posterior=categorical: 16 variables; model=vqvae: model.code_dim)",
        "D/4 rounded up, in [1, 16] (times posterior.classes with posterior=categorical)",
    ),
    "loss": ("bernoulli (gaussian for values outside [0, 1])", "gaussian"),
    "loss.variance": ("global", "pixel (each feature's sigma predicted by the decoder)"),
    "loss.sigma": ("0.1", "1 (standardised units)"),
    "dataset.standardize": ("false", "true"),
    "train.trim": ("0", "0.2"),
    "train.epochs": ("10", "enough for about 2000 steps, in [10, 500]"),
    "train.early_stop_patience": ("0", "20 (with a validation split)"),
    "objective.dataset_size": ("the training split's size (objective=btcvae)", "the same"),
    "objective.capacity_steps": (
        "the whole run: train.epochs x steps per epoch (objective=capacity)",
        "the same",
    ),
}

IMAGE_EPOCHS = 10
TABLE_DROPOUT = 0.1
#: robust training: the share of each batch's highest-loss examples left out of the loss, so that the
#: anomalies hidden in the training data are not learnt (they are the rows the model explains worst)
TABLE_TRIM = 0.2
TABLE_STEPS = 2000  # optimisation steps the automatic train.epochs aims at on a table
TABLE_EPOCHS = (10, 500)
TABLE_PATIENCE = 20


def is_vectors(shape: Shape | list[int]) -> bool:
    """(1, 1, D): one row of D features, as dataset=tensor holds (N, D) arrays and CSV tables."""
    return tuple(shape[:2]) == (1, 1)


def hidden_dims_default(shape: Shape) -> list[int]:
    """The MLP's hidden widths: [512, 256] for images; for D features a small multiple of D, capped."""
    if not is_vectors(shape):
        return [512, 256]
    width = min(256, max(32, 2 ** math.ceil(math.log2(2 * shape[2]))))
    return [width, width // 2]


def latent_dim_default(shape: Shape) -> int:
    """16 for images; below the number of features for vectors (D/4 rounded up, 1 to 16)."""
    return min(16, max(1, math.ceil(shape[2] / 4))) if is_vectors(shape) else 16


def standardize_default(shape: Shape) -> bool:
    """Vectors are standardised (features in their own units would otherwise weigh by their scale)."""
    return is_vectors(shape)


def epochs_default(shape: Shape, num_train: int, batch_size: int) -> int:
    """10 for images; for a table, epochs enough for about TABLE_STEPS steps (small tables need many)."""
    if not is_vectors(shape):
        return IMAGE_EPOCHS
    steps = max(1, math.ceil(num_train / batch_size))
    low, high = TABLE_EPOCHS
    return min(high, max(low, math.ceil(TABLE_STEPS / steps)))


def before_data(cfg: DictConfig) -> DictConfig:
    """What is decided before the data is read: an explicit loss=bernoulli models values in [0, 1], so
    a table is then not standardised unless dataset.standardize says so. Returns cfg."""
    if cfg.dataset.get("standardize", "<absent>") is None and cfg.loss.name == "bernoulli":
        with open_dict(cfg):
            cfg.dataset.standardize = False
    return cfg


def resolve_auto(cfg: DictConfig, data: Any) -> dict[str, Any]:
    """Give every automatic key of a training config (left null, or model=auto / loss=auto) its value for
    `data` (a DataBundle: its shape, value range, standardisation and split sizes), in place; returns
    {key: value} of what it set."""
    shape, unit_range, standardized = tuple(data.shape), data.unit_range, data.stats is not None
    num_train, num_val = len(data.train), len(data.val)
    vectors = is_vectors(shape)
    chosen: dict[str, Any] = {}

    def put(node: DictConfig, key: str, value: Any, full: str) -> None:
        if node.get(key, "<absent>") is None:
            node[key] = value
            chosen[full] = value

    with open_dict(cfg):
        if cfg.model.name == "auto":
            cfg.model = _option("model", "mlp" if vectors else "conv", cfg.model)
            chosen["model"] = cfg.model.name
        if cfg.loss.name == "auto":
            cfg.loss = _option("loss", "gaussian" if vectors or not unit_range else "bernoulli", cfg.loss)
            chosen["loss"] = cfg.loss.name
        if cfg.model.name == "mlp":
            put(cfg.model, "hidden_dims", hidden_dims_default(shape), "model.hidden_dims")
            put(cfg.model, "dropout", TABLE_DROPOUT if vectors else 0.0, "model.dropout")
        if cfg.model.name == "vqvae":  # its own objective; latent_dim is each code vector's size, D
            if cfg.objective.name == "elbo":
                cfg.objective = _option("objective", "vq", cfg.objective)
                chosen["objective"] = "vq"
            put(cfg, "latent_dim", cfg.model.code_dim, "latent_dim")
        # (the default counts latent variables: posterior=categorical's take K code values each)
        put(cfg, "latent_dim", latent_dim_default(shape) * entries_per_variable(cfg.posterior), "latent_dim")
        if cfg.loss.name == "gaussian":
            put(cfg.loss, "variance", "pixel" if vectors else "global", "loss.variance")
            put(cfg.loss, "sigma", 1.0 if vectors else 0.1, "loss.sigma")
        put(cfg.dataset, "standardize", standardized, "dataset.standardize")
        tc = cfg.train
        put(tc, "trim", TABLE_TRIM if vectors else 0.0, "train.trim")
        put(tc, "epochs", epochs_default(shape, num_train, tc.batch_size), "train.epochs")
        put(
            tc,
            "early_stop_patience",
            TABLE_PATIENCE if vectors and num_val else 0,
            "train.early_stop_patience",
        )
        # the objectives' own: beta-TCVAE weighs the batch by the dataset's size; the capacity anneals
        # over the whole run, counted for one process (several share an epoch's batches: C then ends
        # short of objective.capacity, unless objective.capacity_steps is set)
        put(cfg.objective, "dataset_size", num_train, "objective.dataset_size")
        steps = tc.epochs * math.ceil(num_train / tc.batch_size)
        put(cfg.objective, "capacity_steps", steps, "objective.capacity_steps")
    if not num_val and (tc.early_stop_patience or tc.scheduler == "plateau"):
        key = "train.early_stop_patience" if tc.early_stop_patience else "train.scheduler=plateau"
        raise ConfigError(
            f"{key} follows the validation loss, and this data has no validation split (e.g. "
            f"dataset.val_fraction=0): hold some data out, or drop {key}"
        )
    if vectors and chosen:
        shown = ", ".join(f"{k}={_shown(v)}" for k, v in chosen.items())
        log.info("defaults for a table of %d features: %s", shape[2], shown)
    return chosen


def _option(group: str, name: str, node: DictConfig) -> DictConfig:
    """The section of option `name`: its schema's defaults, with what `node` (an auto section) sets."""
    section = OmegaConf.structured(OPTIONS[group][name])
    for key, value in node.items():
        if key != "name" and value is not None and key in section:
            section[key] = value
    return section


def _shown(value: Any) -> str:
    return str(OmegaConf.to_container(value)) if isinstance(value, DictConfig) else str(value)
