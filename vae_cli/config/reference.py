"""The key reference, generated from the schemas: `vae <command> --help` and docs/configuration.md.

    python -m vae_cli.config.reference --write     (make docs) rewrites docs/configuration.md
    python -m vae_cli.config.reference             prints it

Nothing here is written by hand per key: a key's default, help text and rules come from its field in
vae_cli/config/, the options of a group from the ConfigStore's schemas and conf/<group>/*.yaml.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from vae_cli.config import COMMAND_SCHEMAS, GROUPS, OPTIONS, TrainAppConfig
from vae_cli.config.compose import config_dir
from vae_cli.config.fields import GroupBase, Spec, default_of, schema_of, spec_of, type_hints

COMMANDS = ("train", *COMMAND_SCHEMAS)
#: config groups whose options are YAML recipes in conf/<group>/
YAML_GROUPS = ("experiment", "launcher", "hparams_search")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
#: Hydra flags followed by a value (`--cfg job`)
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp"}
_FLAGS_WITH_VALUE |= {"--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def schema(command: str) -> type:
    return TrainAppConfig if command == "train" else COMMAND_SCHEMAS[command][0]


def fmt(value: Any) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if value == MISSING:
        return "(required)"
    return str(value) if str(value) else '""'


def rules(spec: Spec | None, markdown: bool = False) -> str:
    if spec is None:
        return ""
    texts = spec.rules()
    if markdown and spec.choices is not None:  # the choices as code
        texts[0] = "one of " + ", ".join(f"`{c}`" for c in spec.choices)
    return "; ".join(texts)


def rows(typ: type, node: Any = None, prefix: str = "") -> Iterator[tuple[str, Any, Spec | None]]:
    """(key, value, spec) for every key of `typ`: the defaults, or the values of `node`. The sections
    (train, dataset, ...) follow the plain keys, the group sections last; without a node a group
    section is left out (its keys are its option's)."""
    hints = type_hints(typ)
    fields = dataclasses.fields(typ)
    sections = [f for f in fields if dataclasses.is_dataclass(hints.get(f.name))]
    for f in fields:
        if f not in sections:
            value = node[f.name] if node is not None and f.name in node else default_of(f)
            yield f"{prefix}{f.name}", value, spec_of(f)
    for f in sorted(sections, key=lambda f: issubclass(hints[f.name], GroupBase)):
        if node is not None:
            yield from rows(schema_of(node[f.name], hints[f.name]), node[f.name], f"{prefix}{f.name}.")
        elif not issubclass(hints[f.name], GroupBase):
            yield from rows(hints[f.name], None, f"{prefix}{f.name}.")


def summary(typ: type) -> str:
    """A schema's docstring as one paragraph."""
    doc = typ.__doc__ or ""
    return " ".join(doc.split()) if not doc.startswith(f"{typ.__name__}(") else ""


def yaml_options(group: str) -> dict[str, str]:
    """option -> the first line of its description, for the YAML groups (experiment, ...)."""
    out = {}
    for path in sorted((config_dir() / group).glob("*.yaml")):
        lines = [ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")]
        out[path.stem] = next((ln for ln in lines if ln and not ln.startswith("@package")), "")
    return out


def default_choices() -> dict[str, str | None]:
    """group -> the option conf/train.yaml's defaults list picks (None: none)."""
    defaults = OmegaConf.load(config_dir() / "train.yaml").get("defaults", [])
    picked: dict[str, str | None] = {}
    for entry in defaults:
        if isinstance(entry, DictConfig):
            picked.update({str(k): v for k, v in entry.items() if not str(k).startswith("override ")})
    return picked


# --- vae <command> --help -----------------------------------------------------------------------------


def command_help(command: str, overrides: list[str]) -> str:
    """The text of `vae <command> <overrides> --help`: usage, the config groups (train), and every key of
    the config that command line would run with, with its value, meaning and rules."""
    from vae_cli.cli import SUBCOMMANDS

    plain, dropped = _plain_overrides(overrides)
    cfg, choices = _compose(command, plain)
    what = " ".join(["vae", command, *plain])
    lines = [_usage(command), SUBCOMMANDS[command][0], ""]
    if command == "train":
        lines.append("config groups (group=option; * marks the one in use):")
        for group in (*GROUPS, *YAML_GROUPS):
            names = sorted(OPTIONS[group]) if group in GROUPS else list(yaml_options(group))
            marked = [f"*{n}" if n == choices.get(group) else n for n in names]
            lines.append(f"  {group:<16} {'  '.join(marked)}")
        lines += ["  (and Hydra's: hydra/launcher=joblib runs a sweep's jobs in parallel here)", ""]
    lines.append(f"keys (key=value), with the values of `{what}`:")
    table = [(k, fmt(v), spec) for k, v, spec in rows(schema(command), cfg)]
    width = max(len(k) for k, _, _ in table)
    value_width = min(max(len(v) for _, v, _ in table), 24)
    for k, v, spec in table:
        meaning = spec.help if spec else ""
        if rules(spec):
            meaning += f" [{rules(spec)}]"
        if len(v) > value_width:
            lines += [f"  {k:<{width}}  {v}", f"  {'':<{width}}  {'':<{value_width}}  {meaning}"]
        else:
            lines.append(f"  {k:<{width}}  {v:<{value_width}}  {meaning}".rstrip())
    if dropped:
        lines += ["", f"(not applied here, being sweeps or flags: {' '.join(dropped)})"]
    lines += ["", "Every option's keys: docs/configuration.md. Hydra's own help: --hydra-help."]
    return "\n".join(lines)


def print_help(command: str, overrides: list[str]) -> None:
    """Print command_help; a reader that stops early (`vae train --help | head`) is no error."""
    try:
        print(command_help(command, overrides), flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _usage(command: str) -> str:
    if command == "train":
        return "usage: vae train [group=option ...] [key=value ...] [-m] [--cfg job] [--help]"
    return f"usage: vae {command} ckpt=<run folder or .ckpt> [key=value ...] [--cfg job] [--help]"


def _plain_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """The overrides that compose as they are; the rest (flags, sweeps such as beta=1,4) are dropped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    kept, dropped, after_flag = [], [], False
    for arg in args:
        if arg.startswith("-") or (after_flag and "=" not in arg and not arg.startswith("~")):
            dropped.append(arg)
            after_flag = arg in _FLAGS_WITH_VALUE
            continue
        after_flag = False
        kept.append(arg)
    parsed = OverridesParser.create().parse_overrides(kept)
    sweeps = {o.input_line for o in parsed if o.is_sweep_override()}
    return [a for a in kept if a not in sweeps], dropped + [a for a in kept if a in sweeps]


def _compose(command: str, overrides: list[str]) -> tuple[DictConfig, dict[str, Any]]:
    """The config `vae <command> <overrides>` would run with, and the chosen option of each group."""
    from vae_cli.config.compose import compose_run

    cfg, hydra_node = compose_run(overrides, command)
    return cfg, OmegaConf.to_container(hydra_node.choices)


# --- docs/configuration.md -------------------------------------------------------------------------------

INTRO = """\
Every key can be set on the command line as `key=value` (`vae train train.lr=3e-4 latent_dim=32`), and
the option of a config group as `group=option` (`vae train model=mlp`). `vae <command> --help` lists the
same keys with the values a command line would run with: `vae train model=mlp dataset=mnist --help`.

A wrong type (`latent_dim=abc`) or an unknown key (`latnt_dim=8`) stops at composition, a value outside
its rule (below) before any work starts, each with a one-line error naming the key.

Each option of a config group has its own keys: `model.hidden_dims` belongs to `model=mlp`, so
`vae train model.hidden_dims=[400]` is refused while the model is `conv` (the default); choose the option
first, `vae train model=mlp model.hidden_dims=[400]`. Keys every option has (`dataset.seed`,
`model.activation`) work with any of them. A recipe (`experiment=<name>`) sets several keys at once; keys
given on the command line still win."""


def _cell(text: str) -> str:
    """Markdown table text: a | would end the cell, a <name> would be read as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "\\<")


def _table(typ: type, prefix: str) -> list[str]:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for k, v, spec in rows(typ, None, prefix):
        meaning = spec.help if spec else ""
        if rules(spec, markdown=True):
            meaning += f" — {rules(spec, markdown=True)}"
        lines.append(f"| `{k}` | `{fmt(v)}` | {_cell(meaning)} |")
    return lines


def markdown_reference() -> str:
    """The content of docs/configuration.md."""
    from vae_cli.cli import SUBCOMMANDS

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from the schemas in vae_cli/config/ by `make docs` (python -m "
        "vae_cli.config.reference --write): edit those, not this file. -->",
        "",
        INTRO,
    ]
    picked = default_choices()
    for command in COMMANDS:
        out += [
            "",
            f"## `vae {command}`",
            "",
            SUBCOMMANDS[command][0][0].upper() + SUBCOMMANDS[command][0][1:] + ".",
        ]
        if command != "train":
            out += ["", *_table(schema(command), "")]
            continue
        out += ["", "### Config groups", "", "| group | options | default |", "|---|---|---|"]
        for group in (*GROUPS, *YAML_GROUPS):
            names = sorted(OPTIONS[group]) if group in GROUPS else list(yaml_options(group))
            default = picked.get(group)
            options = ", ".join(f"`{n}`" for n in names)
            out.append(f"| `{group}` | {options} | {f'`{default}`' if default else 'none'} |")
        out += [
            "",
            "### Keys",
            "",
            "The top-level and `train.*` keys; each group option's keys follow.",
            "",
            *_table(TrainAppConfig, ""),
        ]
        for group in GROUPS:
            out += ["", f"### `{group}=<option>`"]
            for name in sorted(OPTIONS[group]):
                typ = OPTIONS[group][name]
                out += ["", f"#### `{group}={name}`", ""]
                out += [summary(typ), ""] if summary(typ) else []
                out += _table(typ, f"{group}.")
        for group in YAML_GROUPS:
            out += ["", f"### `{group}=<option>`", "", f"YAML in conf/{group}/."]
            out += [""] + [f"- `{name}`: {_cell(text)}" for name, text in yaml_options(group).items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    text = markdown_reference()
    if argv == ["--write"]:
        DOCS.write_text(text)
        print(f"wrote {DOCS}")
    elif argv:
        sys.exit("usage: python -m vae_cli.config.reference [--write]")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
