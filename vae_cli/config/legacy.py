"""Config sections saved in checkpoints, read back into today's schemas.

Checkpoints written before the per-option schemas hold every key of the one flat schema each group had
then (a conv model's section also has hidden_dims; an mnist dataset's also has path, crop, size, ...).
Those keys are dropped where the option's schema lacks them; any other unknown key, or a value of the
wrong type, is still refused. Keys added later (`model.dropout`) that an older section lacks get the value
its model was trained with (ADDED_KEYS); groups added later (`prior`, `posterior`) that an older config
lacks get the option it was trained with (ADDED_GROUPS).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_cli.config.fields import OPTIONS
from vae_cli.errors import ConfigError

#: group -> every key of its flat schema before the per-option schemas
FLAT_KEYS: dict[str, frozenset[str]] = {
    "dataset": frozenset(
        [
            "name",
            "image_size",
            "channels",
            "binarize",
            "val_size",
            "test_size",
            "size",
            "download",
            "in_memory",
            "crop",
            "seed",
            "path",
            "val_fraction",
            "test_fraction",
            "label_column",
            "standardize",
            "exclude_classes",
        ]
    ),
    "model": frozenset(["name", "hidden_dims", "channels", "kernel_size", "activation"]),
    "loss": frozenset(["name", "variance", "sigma", "min_sigma"]),
    "objective": frozenset(["name", "k"]),
}


#: (group, option) -> keys added since, with the value that rebuilds the models saved before them
ADDED_KEYS: dict[tuple[str, str], dict[str, Any]] = {
    ("model", "mlp"): {"dropout": 0.0},
    ("loss", "logistic"): {"components": 1},  # a single discretised logistic before mixtures
}


#: group -> keys added since to every option of the group (their common schema), with the value that
#: rebuilds the models saved before them
ADDED_TO_GROUP: dict[str, dict[str, Any]] = {
    "model": {"conditional": False},  # model.conditional: before it, no model saw labels
}


#: group -> the section that checkpoints written before the group existed were trained with
ADDED_GROUPS: dict[str, dict[str, Any]] = {
    "prior": {"name": "standard"},  # N(0, I), before the prior was pluggable
    "posterior": {"name": "gaussian"},  # the diagonal Gaussian, likewise
}


def option_schema(group: str, section: Any) -> type:
    """The schema of the option a section's `name` names. Raises ConfigError."""
    name = section.get("name") if isinstance(section, dict | DictConfig) else None
    options = OPTIONS[group]
    if name not in options:
        raise ConfigError(f"unknown {group} '{name}': choose one of {', '.join(sorted(options))}")
    return options[name]


def current_keys(group: str, section: dict[str, Any]) -> dict[str, Any]:
    """`section` without the keys of the old flat schema that its option's schema lacks, and with the keys
    added since (ADDED_KEYS) that it lacks, at the value its model was built with."""
    schema = option_schema(group, section)
    fields = set(schema.__dataclass_fields__)
    kept = {k: v for k, v in section.items() if k in fields or k not in FLAT_KEYS[group]}
    added = {k: v for k, v in ADDED_TO_GROUP.get(group, {}).items() if k in fields}
    return {**added, **ADDED_KEYS.get((group, section.get("name")), {}), **kept}


def saved_section(group: str, section: dict[str, Any]) -> DictConfig:
    """A saved section merged into its option's schema: types checked, unknown keys refused, the old
    flat schema's extra keys dropped. Raises ConfigError or an OmegaConf error."""
    schema = option_schema(group, section)
    return OmegaConf.merge(OmegaConf.structured(schema), current_keys(group, section))


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config (a plain dict) with each group section as today's schema has it, so that it compares
    equal to a current config of the same settings (e.g. when a run resumes from an older checkpoint)."""
    out = {**ADDED_GROUPS, **config}
    for group in FLAT_KEYS:
        section = out.get(group)
        if isinstance(section, dict) and section.get("name") in OPTIONS[group]:
            out[group] = current_keys(group, section)
    return out
