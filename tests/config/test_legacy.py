"""Checkpoints written before the per-option schemas (vae_cli/config/legacy.py) still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model


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
    assert upgraded["model"] == {
        "name": "conv",
        "channels": [8, 16],
        "kernel_size": 4,
        "activation": "relu",
        "conditional": False,  # a key added since: the value its model was built with
    }
    assert trained.model.sample(2).shape == (2, 1, 28, 28)
    for name, sections, phrase in [
        ("unknown.ckpt", {"model": {**model, "depth": 3}}, "its model config does not fit"),
        ("type.ckpt", {"model": {**model, "kernel_size": "big"}}, "its model config does not fit"),
        ("name.ckpt", {"loss": {**loss, "name": "laplace"}}, "unknown loss 'laplace'"),
    ]:
        with pytest.raises(CheckpointError, match=phrase):
            read_checkpoint(write(name, **sections), "cpu")


def test_an_mlp_checkpoint_from_before_dropout_loads_and_resumes_as_it_was(tmp_path: Path) -> None:
    from torch import nn

    from vae_cli.api import read_checkpoint
    from vae_cli.checkpoint import save_checkpoint
    from vae_cli.config import LossConfig, ModelConfig
    from vae_cli.config.legacy import upgrade_config

    # an MLP on a table, saved before model.dropout (and the automatic defaults) existed
    model = {"name": "mlp", "hidden_dims": [16], "activation": "relu"}
    loss = {"name": "gaussian", "variance": "global", "sigma": 0.1, "min_sigma": 0.001}
    dataset = {
        "name": "tensor",
        "path": "t.csv",
        "standardize": True,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
    }
    old = create_model(ModelConfig(**model), (1, 1, 6), 2, create_likelihood(LossConfig(**loss)))
    config = {"model": model, "loss": loss, "dataset": dataset, "latent_dim": 2}
    payload = {"config": config, "image_shape": [1, 1, 6], "model": old.state_dict()}
    save_checkpoint(tmp_path / "old.ckpt", payload)
    trained = read_checkpoint(tmp_path / "old.ckpt", "cpu")
    assert trained.model.state_dict().keys() == old.state_dict().keys()
    assert not any(isinstance(m, nn.Dropout) for m in trained.model.modules())
    assert trained.feature_names is None  # older checkpoints: a scored CSV is matched by position
    # a run resuming from it compares its settings with today's: the dropout it was trained with
    assert upgrade_config(config)["model"]["dropout"] == 0.0


def test_a_logistic_run_from_before_mixtures_resumes_as_one_component() -> None:
    from vae_cli.config.legacy import upgrade_config

    saved = {"loss": {"name": "logistic", "scale": "pixel", "init_scale": 0.05, "min_scale": 1e-4}}
    upgraded = upgrade_config(saved)
    assert upgraded["loss"]["components"] == 1  # the single logistic it was trained as


def test_a_checkpoint_from_before_priors_and_posteriors_loads_as_standard_and_gaussian(
    tmp_path: Path,
) -> None:
    import torch

    from vae_cli.api import read_checkpoint
    from vae_cli.checkpoint import save_checkpoint
    from vae_cli.config import LossConfig, ModelConfig
    from vae_cli.config.legacy import upgrade_config

    # the config and weights as written before the prior and posterior groups: neither section, and no
    # prior.* or posterior.* weights
    model = {"name": "mlp", "hidden_dims": [8], "activation": "relu", "dropout": 0.0}
    config = {
        "model": model,
        "loss": {"name": "bernoulli"},
        "dataset": {"name": "synthetic"},
        "latent_dim": 2,
    }
    net = create_model(ModelConfig(**model), (1, 4, 4), 2, create_likelihood(LossConfig(name="bernoulli")))
    weights = net.state_dict()
    assert not any(k.startswith(("prior.", "posterior.")) for k in weights)
    save_checkpoint(tmp_path / "old.ckpt", {"config": config, "image_shape": [1, 4, 4], "model": weights})
    trained = read_checkpoint(tmp_path / "old.ckpt", "cpu")
    assert trained.model.closed_form  # N(0, I) and the diagonal Gaussian, on the closed-form path
    assert (trained.config.prior.name, trained.config.posterior.name) == ("standard", "gaussian")
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(trained.model.reconstruct(x), net.eval().reconstruct(x))
    # a run resuming from it compares the same settings as today's defaults
    upgraded = upgrade_config(config)
    assert upgraded["prior"] == {"name": "standard"} and upgraded["posterior"] == {"name": "gaussian"}
