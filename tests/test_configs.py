"""Every config combination composes with Hydra's compose API, validates, and builds a working model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from vae_cli.cli import config_dir
from vae_cli.config import register_configs, validate_train_config
from vae_cli.data import create_dataset, make_batches, prepare_batch
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.objectives import elbo_terms

DATASETS = [p.stem for p in (config_dir() / "dataset").glob("*.yaml")]
MODELS = [p.stem for p in (config_dir() / "model").glob("*.yaml")]
LOSSES = [p.stem for p in (config_dir() / "loss").glob("*.yaml")]


@pytest.fixture
def hydra_config() -> Iterator:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield lambda overrides: compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()


def test_config_groups_are_the_documented_ones() -> None:
    assert sorted(DATASETS) == ["celeba", "fashion_mnist", "image_folder", "mnist", "synthetic", "tensor"]
    assert sorted(MODELS) == ["conv", "mlp", "resnet"]
    assert sorted(LOSSES) == ["bernoulli", "gaussian"]


def _data_dir_for(dataset: str, mnist_root: Path, celeba_root: Path, tmp_path: Path) -> Path:
    if dataset == "celeba":
        return celeba_root
    if dataset == "fashion_mnist":
        from tests.conftest import make_idx_dataset

        return make_idx_dataset(tmp_path, folder="FashionMNIST", compress=True)
    return mnist_root


@pytest.mark.parametrize(("dataset", "model", "loss"), list(itertools.product(DATASETS, MODELS, LOSSES)))
def test_every_combination_composes_and_builds(
    hydra_config,
    dataset: str,
    model: str,
    loss: str,
    mnist_root: Path,
    celeba_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Keep Debian's real Fashion-MNIST out of this test: it reads the tiny fixture files instead.
    monkeypatch.setattr("vae_cli.data.mnist.DEBIAN_FASHION_MNIST", tmp_path / "none")
    data_dir = _data_dir_for(dataset, mnist_root, celeba_root, tmp_path)
    overrides = [
        f"dataset={dataset}",
        f"model={model}",
        f"loss={loss}",
        f"data_dir={data_dir}",
        "dataset.download=false",
        "latent_dim=3",
    ]
    if dataset == "synthetic":
        overrides += [
            "dataset.size=60",
            "dataset.val_size=10",
            "dataset.test_size=10",
            "dataset.image_size=32",
        ]
    if dataset in ("mnist", "fashion_mnist"):
        overrides += ["dataset.val_size=20"]
    if dataset == "image_folder":  # ten small RGB images of another size
        folder = tmp_path / "images"
        folder.mkdir()
        for i in range(10):
            Image.fromarray(np.full((20, 24, 3), 25 * i, dtype=np.uint8)).save(folder / f"{i}.png")
        overrides += [f"dataset.path={folder}", "dataset.image_size=32"]
    if dataset == "tensor":  # ten 16x16 grey images as a uint8 array
        np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (10, 16, 16), dtype=np.uint8))
        overrides += [f"dataset.path={tmp_path / 'x.npy'}"]
    cfg = hydra_config(overrides)
    OmegaConf.resolve(cfg)
    validate_train_config(cfg)
    data = create_dataset(cfg.dataset, cfg.data_dir)
    model_ = create_model(cfg.model, data.shape, cfg.latent_dim, create_likelihood(cfg.loss))
    images = next(iter(make_batches(data.train, 4, True, 0, torch.device("cpu"), num_workers=0)))
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == data.shape
    terms = elbo_terms(model_, prepare_batch(images, data.binarize))
    assert terms.recon.shape == (4,) and torch.isfinite(terms.loss(cfg.beta))


def test_data_dir_comes_from_the_environment(hydra_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAE_DATA_DIR", "/somewhere/else")
    cfg = hydra_config([])
    assert OmegaConf.to_container(cfg, resolve=True)["data_dir"] == "/somewhere/else"
    monkeypatch.delenv("VAE_DATA_DIR")
    assert OmegaConf.to_container(hydra_config([]), resolve=True)["data_dir"] == "data"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("latent_dim=0", "latent_dim=0 is invalid"),
        ("beta=-1", "beta=-1.0 is invalid"),
        ("train.lr=0", "train.lr=0.0 is invalid"),
        ("train.epochs=0", "train.epochs=0 is invalid"),
        ("train.optimizer=sgd", "choose one of adam, adamw"),
        ("train.precision=8", "choose one of 32, bf16-mixed, 16-mixed"),
        ("device=tpu", "choose one of auto, cpu, cuda, mps"),
        ("dataset.binarize=maybe", "choose one of none, static, dynamic"),
        ("model.hidden_dims=[]", "non-empty list"),
    ],
)
def test_out_of_range_values_are_rejected(hydra_config, override: str, message: str) -> None:
    cfg: DictConfig = hydra_config([override])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate_train_config(cfg)


def test_defaults_are_valid(hydra_config) -> None:
    validate_train_config(hydra_config([]))
