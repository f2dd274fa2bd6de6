"""Dataclass schemas for every config, registered with Hydra's ConfigStore: the one source of truth for
each key's type, default, help text and allowed values.

Hydra composes `conf/<command>.yaml` (a defaults list and Hydra settings) onto these typed nodes, so a
wrong type (`latent_dim=abc`) or a misspelt key (`latnt_dim=8`) fails at composition. Each config group
option is its own schema (`model=conv` is ConvConfig), so a key of another option (`model.hidden_dims`
with model=conv) fails there too. Ranges and choices, kept in each field's metadata, are checked by
`validate_*` before any work starts. `vae <command> --help` and docs/configuration.md are generated from
the same schemas (vae_cli/config/reference.py). No torch here: the CLI validates before torch loads.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vae_cli.config.commands import (
    COMMAND_SCHEMAS,
    SPLITS,
    EmbedAppConfig,
    EvaluateAppConfig,
    FromCheckpointConfig,
    ReconstructAppConfig,
    SampleAppConfig,
    ScoreAppConfig,
    validate_embed_config,
    validate_evaluate_config,
    validate_reconstruct_config,
    validate_sample_config,
    validate_score_config,
)
from vae_cli.config.data import (
    CelebaConfig,
    DatasetConfig,
    FashionMnistConfig,
    ImageFolderConfig,
    MnistConfig,
    SyntheticConfig,
    TensorConfig,
    validate_own_data,
)
from vae_cli.config.fields import OPTIONS, check_node, key
from vae_cli.config.likelihoods import BernoulliConfig, GaussianConfig, LossConfig
from vae_cli.config.models import ConvConfig, LadderConfig, MlpConfig, ModelConfig, ResnetConfig
from vae_cli.config.objectives import ElboConfig, IwaeConfig, ObjectiveConfig
from vae_cli.config.posteriors import (
    CategoricalPosteriorConfig,
    GaussianPosteriorConfig,
    IafPosteriorConfig,
    PosteriorConfig,
)
from vae_cli.config.priors import (
    MogPriorConfig,
    PriorConfig,
    StandardPriorConfig,
    UniformPriorConfig,
    VampPriorConfig,
)
from vae_cli.config.train import TrainAppConfig, TrainConfig, validate_denoise, validate_train_config

#: the config groups whose options are schemas (the others, experiment/launcher/hparams_search, are YAML)
GROUPS = ("dataset", "model", "prior", "posterior", "loss", "objective")


def register_configs() -> None:
    """Store the primary schemas (`train_schema`, ...) and every group option (`model/conv`, ...)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    for group in GROUPS:
        for name, schema in OPTIONS[group].items():
            cs.store(group=group, name=name, node=schema)
    for schema, name in COMMAND_SCHEMAS.values():
        cs.store(name=name, node=schema)
    # `hydra.run.dir: ${vae_or:${out},'outputs/...'}`: the run folder is `out` when it names a folder;
    # when it names a file (out=samples.png) or a folder inside another run (out=<run>/samples), Hydra's
    # log and .hydra/ go to the default folder.
    if not OmegaConf.has_resolver("vae_or"):
        OmegaConf.register_new_resolver("vae_or", run_folder)


def run_folder(out: str | None, default: str) -> str:
    """The Hydra run folder of a checkpoint command: `out` when it is one (vae_cli.paths), else `default`."""
    from vae_cli.paths import out_is_run_folder

    return out if out_is_run_folder(out) else default


__all__ = [
    "COMMAND_SCHEMAS",
    "GROUPS",
    "OPTIONS",
    "SPLITS",
    "BernoulliConfig",
    "CategoricalPosteriorConfig",
    "CelebaConfig",
    "ConvConfig",
    "DatasetConfig",
    "ElboConfig",
    "EmbedAppConfig",
    "EvaluateAppConfig",
    "FashionMnistConfig",
    "FromCheckpointConfig",
    "GaussianPosteriorConfig",
    "GaussianConfig",
    "ImageFolderConfig",
    "IafPosteriorConfig",
    "IwaeConfig",
    "LossConfig",
    "LadderConfig",
    "MlpConfig",
    "MnistConfig",
    "MogPriorConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "PosteriorConfig",
    "PriorConfig",
    "ReconstructAppConfig",
    "ResnetConfig",
    "SampleAppConfig",
    "StandardPriorConfig",
    "ScoreAppConfig",
    "SyntheticConfig",
    "TensorConfig",
    "TrainAppConfig",
    "TrainConfig",
    "UniformPriorConfig",
    "VampPriorConfig",
    "check_node",
    "key",
    "register_configs",
    "validate_denoise",
    "validate_embed_config",
    "validate_evaluate_config",
    "validate_own_data",
    "validate_reconstruct_config",
    "validate_sample_config",
    "validate_score_config",
    "validate_train_config",
]
