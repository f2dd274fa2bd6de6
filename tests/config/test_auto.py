"""The automatic defaults (vae_cli/config/auto.py): tables get theirs, images keep theirs, a key the user
set is kept, the checkpoint holds the resolved values, and the planted outliers of issue 18 rank first
with the commands docs/own-data.md recommends."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers.cli import vae
from vae_cli.cli import compose_config
from vae_cli.config.auto import before_data, hidden_dims_default, latent_dim_default, resolve_auto
from vae_cli.errors import ConfigError


def bundle(shape: tuple[int, int, int], n_train: int = 320, n_val: int = 40, **kw) -> SimpleNamespace:
    """What resolve_auto reads of a DataBundle."""
    defaults = {"unit_range": shape[:2] != (1, 1), "stats": {} if shape[:2] == (1, 1) else None}
    fields = {**defaults, **kw}
    return SimpleNamespace(shape=shape, train=range(n_train), val=range(n_val), **fields)


def resolved(overrides: list[str], data: SimpleNamespace) -> tuple:
    cfg = compose_config(["dataset=tensor", "dataset.path=t.csv", *overrides])
    before_data(cfg)
    return cfg, resolve_auto(cfg, data)


def test_a_table_gets_its_own_defaults() -> None:
    cfg, chosen = resolved([], bundle((1, 1, 6)))
    assert cfg.model.name == "mlp" and cfg.model.activation == "relu"
    assert list(cfg.model.hidden_dims) == [32, 16] and cfg.model.dropout == 0.1  # sized from 6 features
    assert cfg.latent_dim == 2  # below the number of features
    assert (cfg.loss.name, cfg.loss.variance, cfg.loss.sigma) == ("gaussian", "pixel", 1.0)  # learned
    assert cfg.dataset.standardize is True
    assert cfg.train.trim == 0.2  # robust training
    assert cfg.train.early_stop_patience == 20 and cfg.train.epochs == 500  # 3 steps an epoch: many
    assert chosen["model.hidden_dims"] == [32, 16] and chosen["loss"] == "gaussian"
    # wider tables get wider (capped) networks, and more (at most 16) latent dimensions
    assert hidden_dims_default((1, 1, 30)) == [64, 32] and latent_dim_default((1, 1, 30)) == 8
    assert hidden_dims_default((1, 1, 1000)) == [256, 128] and latent_dim_default((1, 1, 1000)) == 16
    big, _ = resolved([], bundle((1, 1, 6), n_train=100_000))
    assert big.train.epochs == 10  # 782 steps an epoch: the fewest epochs


def test_what_the_user_sets_is_kept() -> None:
    explicit = [
        "model=mlp",
        "model.hidden_dims=[8]",
        "model.dropout=0",
        "latent_dim=5",
        "loss=gaussian",
        "loss.variance=global",
        "loss.sigma=0.5",
        "dataset.standardize=false",
        "train.trim=0",
        "train.epochs=3",
        "train.early_stop_patience=0",
    ]
    cfg, chosen = resolved(explicit, bundle((1, 1, 6), stats=None))
    assert chosen == {}
    assert list(cfg.model.hidden_dims) == [8] and cfg.model.dropout == 0 and cfg.latent_dim == 5
    assert (cfg.loss.variance, cfg.loss.sigma, cfg.dataset.standardize) == ("global", 0.5, False)
    assert (cfg.train.trim, cfg.train.epochs, cfg.train.early_stop_patience) == (0, 3, 0)
    # one key set, the others still automatic
    cfg, chosen = resolved(["model=mlp", "model.dropout=0.3"], bundle((1, 1, 6)))
    assert cfg.model.dropout == 0.3 and list(cfg.model.hidden_dims) == [32, 16]
    # loss=bernoulli means values in [0, 1]: the table is then not standardised
    cfg = compose_config(["dataset=tensor", "dataset.path=t.csv", "loss=bernoulli"])
    assert before_data(cfg).dataset.standardize is False


def test_images_keep_their_defaults() -> None:
    cfg = compose_config([])
    resolve_auto(cfg, bundle((1, 32, 32)))
    assert cfg.model.name == "conv" and cfg.model.activation == "leaky_relu"
    assert list(cfg.model.channels) == [32, 64, 128, 256]
    assert cfg.loss.name == "bernoulli" and cfg.latent_dim == 16
    assert (cfg.train.epochs, cfg.train.trim, cfg.train.early_stop_patience) == (10, 0, 0)
    cfg = compose_config(["model=mlp", "loss=gaussian"])
    resolve_auto(cfg, bundle((1, 32, 32)))
    assert list(cfg.model.hidden_dims) == [512, 256] and cfg.model.dropout == 0
    assert (cfg.loss.variance, cfg.loss.sigma) == ("global", 0.1)
    # images outside [0, 1] (a tensor file of floats): the Gaussian, as loss=bernoulli could not model them
    cfg = compose_config(["dataset=tensor", "dataset.path=x.npy"])
    resolve_auto(cfg, bundle((1, 8, 8), unit_range=False, stats=None))
    assert cfg.loss.name == "gaussian" and cfg.dataset.standardize is False


def test_every_automatic_key_is_listed() -> None:
    import dataclasses

    from vae_cli.config import OPTIONS, TrainAppConfig, TrainConfig
    from vae_cli.config.auto import AUTO_KEYS
    from vae_cli.config.fields import spec_of

    schemas = [("", TrainAppConfig), ("train.", TrainConfig)]
    schemas += [(f"{group}.", schema) for group, options in OPTIONS.items() for schema in options.values()]
    automatic = {
        f"{prefix}{f.name}"
        for prefix, schema in schemas
        for f in dataclasses.fields(schema)
        if spec_of(f) and "(auto)" in spec_of(f).help
    }
    assert automatic == set(AUTO_KEYS) - {"model", "loss"}


def test_without_a_validation_split_nothing_follows_the_validation_loss() -> None:
    cfg, _ = resolved([], bundle((1, 1, 6), n_val=0))
    assert cfg.train.early_stop_patience == 0
    for setting in ("train.early_stop_patience=5", "train.scheduler=plateau"):
        with pytest.raises(ConfigError, match="no validation split"):
            resolved([setting], bundle((1, 1, 6), n_val=0))


# --- end to end: a table trained with the defaults, its checkpoint, and the planted outliers ----------------


def planted_table(path: Path, seed: int, n: int = 400, d: int = 6, k: int = 5) -> set[str]:
    """Issue 18's case: n rows of d standard-normal features, k of them +12 in every feature. Returns the
    rows (0-based) of the planted ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    rows = rng.choice(n, k, replace=False)
    x[rows] += 12
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{j}" for j in range(d)] + ["label"])
        writer.writerows([[*np.round(r, 5), int(i in rows)] for i, r in enumerate(x)])
    return {str(i) for i in rows}


def test_planted_outliers_rank_first_and_the_checkpoint_holds_the_table_defaults(tmp_path: Path) -> None:
    from vae_cli import load_model

    table = tmp_path / "table.csv"
    planted = planted_table(table, seed=0)
    # docs/own-data.md's recipe (train on all rows, score the file), with fewer epochs to stay fast
    train = ["train", "dataset=tensor", f"dataset.path={table}", "dataset.label_column=label"]
    train += ["dataset.val_fraction=0", "dataset.test_fraction=0", "train.epochs=40", "hydra.run.dir=run"]
    result = vae(train, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "defaults for a table of 6 features" in result.stderr
    result = vae(["score", "ckpt=run", f"input={table}", "out=scores"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "scores" / "scores.csv", newline="") as f:
        top = [row["name"] for row in csv.DictReader(f)][:5]
    assert set(top) == planted
    assert json.loads((tmp_path / "scores" / "score_metrics.json").read_text())["roc_auc"] == 1.0

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["automatic"]["model.hidden_dims"] == [32, 16] and metrics["best_epoch"] == 40
    model = load_model(tmp_path / "run", device="cpu")
    config = model.config
    assert (config.model.name, list(config.model.hidden_dims), config.model.dropout) == ("mlp", [32, 16], 0.1)
    assert (config.loss.name, config.loss.variance, config.latent_dim) == ("gaussian", "pixel", 2)
    assert config.dataset.standardize is True and config.train.trim == 0.2
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules()) and not model.training
