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
from vae_cli.config import OPTIONS, register_configs, validate_train_config
from vae_cli.data import create_dataset, make_batches, prepare_batch
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.objectives import elbo_terms

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
        "latent_dim=3",
    ]
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
        ("model=mlp model.hidden_dims=[]", "non-empty list"),
    ],
)
def test_out_of_range_values_are_rejected(hydra_config, override: str, message: str) -> None:
    cfg: DictConfig = hydra_config(override.split())
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate_train_config(cfg)


def test_defaults_are_valid(hydra_config) -> None:
    validate_train_config(hydra_config([]))


# --- one source of truth: the schemas (vae_cli/config/) --------------------------------------------------


def test_every_registered_component_has_a_schema_and_every_schema_a_builder() -> None:
    from hydra.core.config_store import ConfigStore

    from vae_cli.data.base import DATASETS as DATASET_BUILDERS
    from vae_cli.likelihoods import LIKELIHOODS
    from vae_cli.models import MODELS as MODEL_BUILDERS
    from vae_cli.objectives import OBJECTIVES

    register_configs()
    registries = {
        "dataset": DATASET_BUILDERS,
        "model": MODEL_BUILDERS,
        "loss": LIKELIHOODS,
        "objective": OBJECTIVES,
    }
    for group, registry in registries.items():
        assert sorted(OPTIONS[group]) == registry.names(), group
        stored = sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list(group))
        assert stored == registry.names(), group
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
    synthetic = section([], "dataset")
    assert (synthetic["image_size"], synthetic["size"], synthetic["val_size"], synthetic["test_size"]) == (
        64,
        10000,
        1000,
        1000,
    )
    assert section([], "model") == {
        "name": "conv",
        "activation": "leaky_relu",
        "channels": [32, 64, 128, 256],
        "kernel_size": 4,
    }
    assert section(["model=mlp"], "model") == {"name": "mlp", "activation": "relu", "hidden_dims": [512, 256]}
    assert section(["model=resnet"], "model")["channels"] == [32, 64]
    assert section(["loss=gaussian"], "loss")["variance"] == "global"
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


def test_the_configuration_reference_is_generated_from_the_schemas() -> None:
    from vae_cli.config.reference import DOCS, markdown_reference

    assert DOCS.read_text() == markdown_reference(), "docs/configuration.md is stale: run `make docs`"


def test_help_shows_the_keys_of_the_config_a_command_line_runs_with() -> None:
    from vae_cli.config.reference import command_help

    text = command_help("train", ["model=mlp", "latent_dim=7", "-m", "beta=1,4"])
    keys = {
        line.split()[0]: line.split()[1]
        for line in text.splitlines()
        if line.startswith("  ") and "." in line
    }
    assert keys["model.hidden_dims"] == "[512," and "model.channels" not in keys
    assert "train.lr" in keys and "dataset.size" in keys
    assert any(line.split()[:2] == ["latent_dim", "7"] for line in text.splitlines())
    assert "*mlp" in text and "*synthetic" in text and "beta=1,4" in text  # a sweep is named, not applied
    sample = command_help("sample", [])
    sample_keys = [line.split()[0] for line in sample.splitlines() if line.startswith("  ")]
    assert "temperature" in sample_keys and "latent_dim" not in sample_keys
    assert not any(k.startswith(("train.", "dataset.", "model.", "loss.")) for k in sample_keys)


def test_vae_train_help_prints_the_keys_without_importing_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from vae_cli.cli import main; main(['train', 'model=mlp', '--help']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model.hidden_dims" in result.stdout and "usage: vae train" in result.stdout


def test_a_checkpoint_with_the_old_flat_config_sections_loads(tmp_path: Path) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.checkpoint import save_checkpoint
    from vae_cli.config import LossConfig, ModelConfig
    from vae_cli.config.legacy import upgrade_config
    from vae_cli.errors import CheckpointError

    # the sections as checkpoints written before the per-option schemas hold them: every flat key
    model = {
        "name": "conv",
        "hidden_dims": [512, 256],
        "channels": [8, 16],
        "kernel_size": 4,
        "activation": "relu",
    }
    loss = {"name": "bernoulli", "variance": "fixed", "sigma": 0.1, "min_sigma": 0.001}
    dataset = {
        "name": "mnist", "image_size": 28, "channels": 1, "binarize": "dynamic", "val_size": 1000,
        "test_size": 0, "size": 0, "download": True, "in_memory": "auto", "crop": 0, "seed": 0, "path": None,
        "val_fraction": 0.1, "test_fraction": 0.1, "label_column": None, "standardize": False,
        "exclude_classes": [],
    }  # fmt: skip
    net = create_model(ModelConfig(name="conv", channels=[8, 16], activation="relu"), (1, 28, 28), 3,
                       create_likelihood(LossConfig(name="bernoulli")))  # fmt: skip

    def write(name: str, **sections: dict) -> Path:
        config = {"model": model, "loss": loss, "dataset": dataset, "latent_dim": 3, **sections}
        save_checkpoint(
            tmp_path / name, {"config": config, "image_shape": [1, 28, 28], "model": net.state_dict()}
        )
        return tmp_path / name

    trained = read_checkpoint(write("old.ckpt"), "cpu")
    assert trained.dataset.binarize == "dynamic" and "crop" not in trained.dataset
    # what a run resuming from it compares: the same settings as today's config, once upgraded
    upgraded = upgrade_config({"model": model, "loss": loss, "dataset": dataset})
    assert upgraded["loss"] == {"name": "bernoulli"}
    assert upgraded["model"] == {"name": "conv", "channels": [8, 16], "kernel_size": 4, "activation": "relu"}
    assert trained.model.sample(2).shape == (2, 1, 28, 28)
    for name, sections, phrase in [
        ("unknown.ckpt", {"model": {**model, "depth": 3}}, "its model config does not fit"),
        ("type.ckpt", {"model": {**model, "kernel_size": "big"}}, "its model config does not fit"),
        ("name.ckpt", {"loss": {**loss, "name": "laplace"}}, "unknown loss 'laplace'"),
    ]:
        with pytest.raises(CheckpointError, match=phrase):
            read_checkpoint(write(name, **sections), "cpu")
