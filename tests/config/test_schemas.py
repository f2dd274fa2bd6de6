"""The config schemas (vae_cli/config/): every config combination composes with Hydra's compose API,
validates, and builds a working model; every value is checked; the schemas are the one source of truth."""

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
from vae_cli.config import (
    OPTIONS,
    DatasetConfig,
    LossConfig,
    ModelConfig,
    ObjectiveConfig,
    TrainAppConfig,
    register_configs,
    validate_train_config,
)
from vae_cli.config.auto import before_data, resolve_auto
from vae_cli.data import create_dataset, make_batches, prepare_batch
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.objectives import OBJECTIVES

DATASETS = list(OPTIONS["dataset"])


MODELS = list(OPTIONS["model"])


LOSSES = list(OPTIONS["loss"])


@pytest.fixture
def hydra_config() -> Iterator:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield lambda overrides: compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()


def test_config_groups_are_the_documented_ones() -> None:
    assert sorted(DATASETS) == ["celeba", "fashion_mnist", "image_folder", "mnist", "synthetic", "tensor"]
    assert sorted(MODELS) == ["auto", "conv", "ladder", "mlp", "resnet", "vqvae"]
    assert sorted(LOSSES) == ["auto", "bernoulli", "gaussian", "logistic"]


def _data_dir_for(dataset: str, mnist_root: Path, celeba_root: Path, tmp_path: Path) -> Path:
    if dataset == "celeba":
        return celeba_root
    if dataset == "fashion_mnist":
        from tests.helpers.data import make_idx_dataset

        return make_idx_dataset(tmp_path, folder="FashionMNIST", compress=True)
    return mnist_root


#: every pair of a dataset, a model and a loss (each dataset meets each model, and each of them each loss:
#: the loss of dataset i with model j is loss (i + j) mod 4), 36 cases where the full product has 144
PAIRS = [
    (dataset, model, LOSSES[(i + j) % len(LOSSES)])
    for i, dataset in enumerate(DATASETS)
    for j, model in enumerate(MODELS)
]


def test_the_pairs_cover_every_pair_of_dataset_model_and_loss() -> None:
    covered = [
        {(d, m) for d, m, _ in PAIRS},
        {(d, lo) for d, _, lo in PAIRS},
        {(m, lo) for _, m, lo in PAIRS},
    ]
    everything = [itertools.product(DATASETS, MODELS), itertools.product(DATASETS, LOSSES)]
    everything.append(itertools.product(MODELS, LOSSES))
    assert covered == [set(pairs) for pairs in everything]


@pytest.mark.parametrize(("dataset", "model", "loss"), PAIRS)
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
        "latent_dim=3",
    ]
    if model == "vqvae":  # its code is model.code_dim vectors on a grid; a tiny codebook and code prior
        overrides = [o for o in overrides if o != "latent_dim=3"]
        overrides += ["model.codebook_size=8", "model.prior_width=8", "model.prior_heads=2"]
    if "download" in OPTIONS["dataset"][dataset].__dataclass_fields__:
        overrides += ["dataset.download=false"]
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
    data = create_dataset(before_data(cfg).dataset, cfg.data_dir)
    resolve_auto(cfg, data)  # model=auto, loss=auto and the null keys, as vae train resolves them
    model_ = create_model(cfg.model, data.shape, cfg.latent_dim, create_likelihood(cfg.loss))
    images = next(iter(make_batches(data.train, 4, True, 0, torch.device("cpu"), num_workers=0)))
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == data.shape
    objective = OBJECTIVES.get(cfg.objective.name)  # elbo; vq for model=vqvae (resolve_auto picks it)
    x = prepare_batch(images, data.binarize)
    terms = objective(model_, x, OmegaConf.to_object(cfg.objective), cfg.beta)
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
        ("model=mlp model.hidden_dims=[]", "non-empty list"),
    ],
)
def test_out_of_range_values_are_rejected(hydra_config, override: str, message: str) -> None:
    cfg: DictConfig = hydra_config(override.split())
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate_train_config(cfg)


def test_defaults_are_valid(hydra_config) -> None:
    validate_train_config(hydra_config([]))


def train_config(**overrides) -> OmegaConf:
    sections = {"model": ModelConfig(name="mlp"), "loss": LossConfig(name="gaussian")}
    objective = ObjectiveConfig(name="elbo")
    cfg = OmegaConf.structured(
        TrainAppConfig(dataset=DatasetConfig(name="tensor"), objective=objective, **sections)
    )
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.denoise": "blur"}, "choose one of none, gaussian, mask"),
        ({"train.denoise": "gaussian"}, "needs noise: set train.noise_level"),
        ({"train.noise_level": 0.2}, "has no effect with train.denoise=none"),
        ({"train.denoise": "mask", "train.noise_level": 1.0}, "must be < 1"),
        ({"train.denoise": "gaussian", "train.noise_level": -0.1}, "must be >= 0"),
        ({"dataset.val_fraction": 0.6, "dataset.test_fraction": 0.5}, r"dataset.test_fraction = 1.1"),
        ({"dataset.test_fraction": 1.0}, r"must be in \[0, 1\)"),
        ({"dataset.standardize": True, "loss.name": "bernoulli"}, "use loss=gaussian"),
    ],
)
def test_own_data_and_denoise_settings_are_validated(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_train_config(train_config(**overrides))
    validate_train_config(train_config(**{"train.denoise": "mask", "train.noise_level": 0.5}))


# --- one source of truth: the schemas (vae_cli/config/) --------------------------------------------------


def test_every_registered_component_has_a_schema_and_every_schema_a_builder() -> None:
    from hydra.core.config_store import ConfigStore

    from vae_cli.data.base import DATASETS as DATASET_BUILDERS
    from vae_cli.likelihoods import LIKELIHOODS
    from vae_cli.models import MODELS as MODEL_BUILDERS
    from vae_cli.models import POSTERIORS, PRIORS
    from vae_cli.objectives import OBJECTIVES

    register_configs()
    registries = {
        "dataset": DATASET_BUILDERS,
        "model": MODEL_BUILDERS,
        "prior": PRIORS,
        "posterior": POSTERIORS,
        "loss": LIKELIHOODS,
        "objective": OBJECTIVES,
    }
    for group, registry in registries.items():
        # model=auto and loss=auto build nothing: they pick one of the others once the data is read
        built = sorted(set(OPTIONS[group]) - {"auto"})
        assert built == registry.names(), group
        stored = sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list(group))
        assert sorted(set(stored) - {"auto"}) == registry.names(), group
    # the group options are schemas only: no YAML file repeats (and drifts from) their defaults
    assert not any((config_dir() / group).exists() for group in registries)


def test_each_option_names_itself_and_every_key_has_help() -> None:
    import dataclasses

    from vae_cli.config import COMMAND_SCHEMAS, TrainAppConfig, TrainConfig
    from vae_cli.config.fields import spec_of

    schemas = [TrainAppConfig, TrainConfig, *(s for s, _ in COMMAND_SCHEMAS.values())]
    schemas += [schema for options in OPTIONS.values() for schema in options.values()]
    for schema in schemas:
        for f in dataclasses.fields(schema):
            if f.name != "train" or schema is not TrainAppConfig:
                assert spec_of(f) and spec_of(f).help, f"{schema.__name__}.{f.name} has no help text"
    for options in OPTIONS.values():
        for name, schema in options.items():
            assert schema.__dataclass_fields__["name"].default == name


def test_the_activation_choices_are_the_ones_the_models_build() -> None:
    from vae_cli.config.models import ACTIVATIONS
    from vae_cli.models.registry import ACTIVATIONS as BUILT

    assert sorted(ACTIVATIONS) == sorted(BUILT)


def test_the_group_option_defaults_are_the_documented_ones(hydra_config) -> None:
    def section(overrides: list[str], group: str) -> dict:
        return OmegaConf.to_container(hydra_config(overrides)[group])

    assert section(["dataset=mnist"], "dataset")["binarize"] == "dynamic"
    synthetic = section(
        [], "dataset"
    )  # the first run takes about a minute; experiment=shapes64 is the full one
    assert (synthetic["image_size"], synthetic["size"], synthetic["val_size"], synthetic["test_size"]) == (
        32,
        6000,
        1000,
        1000,
    )
    # model=auto and loss=auto (conv and bernoulli for images; tests/config/test_auto.py)
    assert section([], "model") == {"name": "auto", "activation": None, "conditional": False}
    assert section([], "loss") == {"name": "auto"}
    assert section(["model=conv"], "model") == {
        "name": "conv",
        "activation": "leaky_relu",
        "conditional": False,
        "channels": [32, 64, 128, 256],
        "kernel_size": 4,
    }
    # null: auto
    mlp = {"name": "mlp", "activation": "relu", "conditional": False, "hidden_dims": None, "dropout": None}
    assert section(["model=mlp"], "model") == mlp
    assert section(["model=resnet"], "model")["channels"] == [32, 64]
    assert section(["loss=gaussian"], "loss")["variance"] is None
    # only iwae has k; code that serves both objectives reads it with a default
    assert hydra_config([]).objective.get("k", 1) == 1
    assert hydra_config(["objective=iwae"]).objective.get("k", 1) == 5


def test_a_key_of_another_option_is_refused_at_composition(hydra_config) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="model.hidden_dims"):
        hydra_config(["model.hidden_dims=[400]"])  # model=conv has channels, not hidden_dims
    with pytest.raises(ConfigCompositionException, match="objective.k"):
        hydra_config(["objective.k=3"])  # elbo has no k
    assert hydra_config(["model=mlp", "model.hidden_dims=[400]"]).model.hidden_dims == [400]
    assert hydra_config(["dataset=mnist", "dataset.seed=3"]).dataset.seed == 3  # a key every dataset has


@pytest.mark.parametrize(
    "choice",
    [
        f"{group}={p.stem}"
        for group in ("experiment", "launcher", "hparams_search")
        for p in sorted((config_dir() / group).glob("*.yaml"))
    ],
)
def test_every_recipe_composes_and_validates(hydra_config, choice: str) -> None:
    validate_train_config(hydra_config([choice]))
