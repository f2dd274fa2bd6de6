"""The command line, checked before Hydra runs (and before torch is imported).

`check_command_line` composes and validates a single run's config and checks the paths it names
(vae_cli/paths.py): a bad command line is one line in about half a second and leaves nothing behind; a
run folder or an output that exists is never overwritten. Path-valued overrides are expanded (`~`) and
quoted for Hydra's grammar first (vae_cli/paths.py), Hydra's flags go before the overrides, a `+key`
that no schema knows is refused, and Hydra's misleading composition errors (`use +key=...`) become one
line with a "did you mean".
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra._internal.utils as hydra_utils
from omegaconf import DictConfig, OmegaConf

from vae_cli import paths
from vae_cli.config.compose import compose_run
from vae_cli.errors import ConfigError, DataError, VaeError

#: Hydra's flags that choose another config (path, name, folder) or rerun one: they take a value, and
#: after them the command line is Hydra's business alone
CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
#: Hydra flags after which the command line is Hydra's business alone (no check first)
HYDRA_ONLY_FLAGS = {"--hydra-help", "--version", "--shell-completion", "-sc", "--info", "-i", *CONFIG_FLAGS}
#: Hydra's flags that take the next argument as their value
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", *CONFIG_FLAGS}


def flags_first(rest: list[str]) -> list[str]:
    """Hydra's flags (with their values) before the overrides, wherever they were typed: Hydra's parser
    reads `vae train beta=4 -m latent_dim=8,16` only as `-m beta=4 latent_dim=8,16`."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith("-"):
            flags.append(arg)
            if arg in VALUE_FLAGS and i + 1 < len(rest):
                flags.append(rest[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return [*flags, *overrides]


def hydra_args(rest: list[str]) -> Any:
    """Hydra's own reading of the command line (overrides, --cfg, -m, ...), or None when Hydra would
    refuse it (Hydra then says why)."""
    if any(a.split("=", 1)[0] in HYDRA_ONLY_FLAGS for a in rest):
        return None
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return hydra_utils.get_args_parser().parse_args(rest)
        except SystemExit:
            return None


def parse_overrides(overrides: list[str]) -> list[Any]:
    """Hydra's parsed overrides; a value the grammar rejects is one line saying how to quote it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as e:
            raise ConfigError(quoting_advice(text, e)) from None
    return parsed


def quoting_advice(text: str, error: BaseException | None = None) -> str:
    if "=" not in text:
        return (
            f"'{text}' is not key=value: a value with spaces must stay one argument, in shell quotes, e.g. "
            f'"dataset.path=my photos"'
        )
    key, _, value = text.partition("=")
    key = key.lstrip("+~")
    return (
        f"cannot read the override {text!r} (Hydra's grammar takes unquoted values of letters, digits and "
        f"/ . - _ only): quote the value inside shell quotes, e.g. \"{key}='{value}'\" (a quote inside: "
        f"\\')"
    )


def validator(command: str) -> Callable[[DictConfig], None]:
    from vae_cli import config

    return (
        config.validate_train_config if command == "train" else getattr(config, f"validate_{command}_config")
    )


def check_command_line(
    command: str, config_name: str, rest: list[str], main_process: bool = True
) -> list[str]:
    """What can be checked without torch before Hydra writes anything: the overrides parse, compose and
    validate; the paths they name exist and are of the right kind; no run folder or output is overwritten
    (`main_process`: the process that writes, rank 0 of a torchrun). Returns the command line to hand to
    Hydra (with a fresh run folder reserved for a checkpoint command)."""
    args = hydra_args(rest)
    if args is None:
        return rest
    overrides = parse_overrides(args.overrides)
    if args.multirun or any(o.is_sweep_override() for o in overrides):
        sweep_dir = next((o for o in overrides if o.key_or_group == "hydra.sweep.dir"), None)
        if sweep_dir is not None and main_process and not args.cfg:
            paths.check_run_dir(Path(str(sweep_dir.value())), "hydra.sweep.dir")
        return rest  # each job is composed, checked and validated as it starts
    try:
        cfg, hydra_node = compose_run(args.overrides, config_name)
    except Exception as e:
        better = explain(e, command, config_name, args.overrides)
        if better is not None:
            raise better from None
        raise
    check_added_keys(cfg, args.overrides, command)
    validator(command)(cfg)
    if args.cfg:
        return rest  # only printed: nothing is written
    given = {o.key_or_group: o for o in overrides}
    check_paths(command, cfg, "data_dir" in given)
    if not main_process:
        return rest
    if hydra_node.mode == "MULTIRUN":  # a sweeper from the config (hparams_search=optuna)
        if "hydra.sweep.dir" in given:
            paths.check_run_dir(Path(hydra_node.sweep_dir), "hydra.sweep.dir")
        return rest
    run_dir = Path(hydra_node.run_dir)
    if command == "train":
        if "hydra.run.dir" in given:
            paths.check_run_dir(run_dir, resume=cfg.train.resume)
            paths.note_named_folder(run_dir)
        return rest  # otherwise UniqueRunDir reserves a fresh folder
    if cfg.out:  # a file to write, or a folder (then Hydra's run folder too) that holds no other run
        paths.check_out(cfg.out, command)
    if "hydra.run.dir" in given:
        paths.check_out(str(run_dir), command, "hydra.run.dir")
    if "hydra.run.dir" in given or paths.out_is_run_folder(cfg.out):
        paths.note_named_folder(run_dir)
        return rest
    # The default folder outputs/<command>/<date>/<time>, made here so that two runs in one second
    # never share it.
    folder = paths.reserve_folder(run_dir)
    return [*rest, f"hydra.run.dir={paths.hydra_quote(str(folder))}"]


def check_paths(command: str, cfg: DictConfig, data_dir_given: bool) -> None:
    """The paths a config names: checkpoints and inputs exist and are of the right kind, data_dir is a
    folder."""
    from_env = "" if data_dir_given or "VAE_DATA_DIR" not in os.environ else "VAE_DATA_DIR"
    paths.check_folder(cfg.get("data_dir"), "data_dir", from_env)
    if command == "train":
        if cfg.train.resume:
            paths.check_checkpoint_file(cfg.train.resume, "train.resume")
        path = cfg.dataset.get("path")
        if path:
            given = Path(str(path)).expanduser()
            under = Path(str(cfg.data_dir)).expanduser() / given
            if not given.exists() and (given.is_absolute() or not under.exists()):
                what = (
                    "a folder of images"
                    if cfg.dataset.name == "image_folder"
                    else "a .npy, .npz, .pt or .csv file"
                )
                where = "" if given.is_absolute() else f" (nor under data_dir={cfg.data_dir})"
                raise DataError(f"dataset.path={path} does not exist{where}: pass {what}")
        return
    paths.find_checkpoint(cfg.ckpt)
    value = cfg.get("input")
    if command == "reconstruct" and value:
        paths.check_input(value, "input", "an image file or a folder of images")
    if command == "score" and value and value not in ("train", "val", "test"):
        paths.check_input(
            value,
            "input",
            "train, val or test (a split of the training data), a folder of images, an image or a "
            ".npy/.npz/.pt/.csv file",
        )


# --- keys that no schema knows --------------------------------------------------------------------------------


def check_added_keys(cfg: DictConfig, overrides: list[str], command: str) -> None:
    """Refuse `+key=value` (and `++key=value`) when `key` is no field of its node's schema: it would be
    added to the config and silently ignored."""
    from hydra.core.override_parser.types import OverrideType

    for o in parse_overrides([t for t in overrides if t.startswith("+")]):
        if o.type not in (OverrideType.ADD, OverrideType.FORCE_ADD) or o.package is not None:
            continue
        key = o.key_or_group
        if key == "hydra" or key.startswith("hydra."):
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent:
            continue  # a config group (+experiment=...): no such node
        schema = OmegaConf.get_type(parent)
        if dataclasses.is_dataclass(schema) and leaf not in {f.name for f in dataclasses.fields(schema)}:
            raise ConfigError(unknown_key_message(key, command, cfg))


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node:
            full = f"{prefix}{k}"
            keys.append(full)
            value = node._get_node(k)
            if isinstance(value, DictConfig):
                keys += dotted_keys(value, f"{full}.")
    return keys


def unknown_key_message(key: str, command: str, cfg: DictConfig | None) -> str:
    """`key` is no key of this config: where it would be one, the nearest keys, and where to look."""
    from vae_cli.config import GROUPS, OPTIONS

    group, _, leaf = key.partition(".")
    option = OmegaConf.select(cfg, f"{group}.name", default=None) if cfg is not None and leaf else None
    where = f"{group}={option}" if group in GROUPS and option else f"vae {command}"
    message = f"{key} is not a key of {where}"
    if group in GROUPS and leaf and "." not in leaf:
        owners = [
            f"{group}={name}"
            for name, schema in OPTIONS.get(group, {}).items()
            if name != option and leaf in {f.name for f in dataclasses.fields(schema)}
        ]
        if owners:
            message += f" (it is a key of {', '.join(owners)})"
    known = [k for k in dotted_keys(cfg) if k != key] if cfg is not None else []
    # Within the key's own section, compare the last names (model.hidden_dim: hidden_dims, not name).
    parent = key.rpartition(".")[0]
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = [siblings[m] for m in difflib.get_close_matches(key.rpartition(".")[2], list(siblings), n=3)]
    close = close or difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    scope = f" {group}={option}" if group in GROUPS and option else ""
    return f"{message} (vae {command}{scope} --help lists every key)"


_COULD_NOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_NOT_IN = re.compile(r"Key '([^']+)' not in '\w+'")
_FULL_KEY = re.compile(r"full_key: (\S+)")
_ALREADY = re.compile(r"Could not append to config\. An item is already at '([^']+)'")


def explain(e: BaseException, command: str, config_name: str, overrides: list[str]) -> VaeError | None:
    """One clear line for Hydra's composition errors that would mislead: a misspelt key (Hydra suggests
    `+key`, which would add a key that nothing reads), an unparsable value. None: keep Hydra's."""
    from hydra.errors import OverrideParseException

    if isinstance(e, VaeError):
        return None
    text = "\n".join(str(x) for x in (e, e.__cause__) if x is not None)
    if isinstance(e, OverrideParseException):
        bad = next((o for o in overrides if o in text or o.split("=", 1)[0] in text), None)
        return ConfigError(quoting_advice(bad)) if bad else None
    if m := _ALREADY.search(text):
        return ConfigError(
            f"{m.group(1)} is already in the config: set it without the '+', {m.group(1)}=<value>"
        )
    m = _COULD_NOT_OVERRIDE.search(text)
    key = m.group(1) if m else None
    if key is None and _NOT_IN.search(text) and (full := _FULL_KEY.search(text)):
        key = full.group(1)
    if key is None:
        return None
    return ConfigError(unknown_key_message(key, command, _config_without(key, config_name, overrides)))


def _config_without(key: str, config_name: str, overrides: list[str]) -> DictConfig | None:
    """The config the keys to suggest come from: composed without the overrides of `key`, else with only
    the config group choices (model=mlp, ...), else the defaults."""
    from vae_cli.config import GROUPS

    rest = [o for o in overrides if _override_key(o) != key]
    choices = [o for o in rest if _override_key(o) in (*GROUPS, "experiment")]
    for attempt in (rest, choices, []):
        try:
            return compose_run(attempt, config_name)[0]
        except Exception:  # noqa: BLE001, S112  another bad override: try with fewer
            continue
    return None


def _override_key(text: str) -> str:
    return text.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def explained(func: Callable[[], Any], command: str, config_name: str, rest: list[str]) -> Callable[[], Any]:
    """Hydra's run, with its misleading composition errors replaced by `explain`'s line."""

    def run() -> Any:
        try:
            return func()
        except Exception as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            args = hydra_args(rest)
            better = explain(e, command, config_name, list(args.overrides) if args else [])
            if better is None:
                raise
            raise better from None

    return run
