"""`key()`: a schema field with its default, help text and rules; `check_node()`: the one validator.

A key's rules (choices, bounds, a custom check) live in its field's metadata, next to its default and
help text, so the validator, `vae <command> --help` and docs/configuration.md all read the same place.
Light by design: no torch here (the CLI validates before torch is imported).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from vae_cli.errors import ConfigError

#: the metadata entry of a field made by key()
SPEC = "vae"


@dataclass(frozen=True)
class Spec:
    """What a key means and which values it allows; None passes every rule (an Optional key's null)."""

    help: str
    choices: tuple[Any, ...] | None = None
    ignore_case: bool = False  # compare str(value).lower() with the choices
    min: float | None = None  # value >= min
    gt: float | None = None  # value > gt
    lt: float | None = None  # value < lt
    rule: str | None = None  # the choices' or bounds' rule in words, instead of the generated one
    check: tuple[Callable[[Any], bool], str] | None = None  # (predicate, its rule in words)

    def _tests(self) -> list[tuple[Callable[[Any], bool], str]]:
        """(passes, rule in words) for each rule, in the order they are checked."""
        tests = []
        if self.choices is not None:
            text = self.rule or f"choose one of {', '.join(map(str, self.choices))}"
            tests.append((lambda v: (str(v).lower() if self.ignore_case else v) in self.choices, text))
        if any(b is not None for b in (self.min, self.gt, self.lt)):
            tests.append((self._in_bounds, self.rule or self._bounds_text()))
        if self.check is not None:
            tests.append(self.check)
        return tests

    def rules(self) -> list[str]:
        """Every rule in words, as an error states it."""
        return [text for _, text in self._tests()]

    def problem(self, value: Any) -> str | None:
        """The rule `value` breaks, or None."""
        if value is None:
            return None
        return next((text for passes, text in self._tests() if not passes(value)), None)

    def shown(self, value: Any) -> Any:
        """The value as an error message shows it."""
        if self.ignore_case and value is not None:
            return str(value).lower()
        return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value

    def _in_bounds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return (
            (self.min is None or value >= self.min)
            and (self.gt is None or value > self.gt)
            and (self.lt is None or value < self.lt)
        )

    def _bounds_text(self) -> str:
        low = self.min if self.min is not None else self.gt
        if self.lt is not None:
            opening = "[" if self.min is not None else "("
            return f"must be in {opening}{low}, {self.lt})" if low is not None else f"must be < {self.lt}"
        if self.min is not None:
            return f"must be at least {self.min}" if self.min >= 1 else f"must be >= {self.min}"
        return f"must be > {self.gt}"


def key(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    ignore_case: bool = False,
    min: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    rule: str | None = None,
    check: tuple[Callable[[Any], bool], str] | None = None,
) -> Any:
    """A dataclass field: `default` (a list or dict is copied per instance), its help text and rules."""
    spec = Spec(help, choices, ignore_case, min, gt, lt, rule, check)
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={SPEC: spec})
    return dataclasses.field(default=default, metadata={SPEC: spec})


def choice(default: str, help: str, *choices: str) -> Any:
    """A key that takes one of `choices`, in any letter case (`train.optimizer=AdamW` is adamw)."""
    return key(default, help, choices=choices, ignore_case=True)


def spec_of(f: dataclasses.Field) -> Spec | None:
    return f.metadata.get(SPEC)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (MISSING for a required key or a section chosen by a config group)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


# --- config groups: one schema per option -----------------------------------------------------------

#: group -> option name -> its schema, e.g. OPTIONS["model"]["conv"] is ConvConfig
OPTIONS: dict[str, dict[str, type]] = {}


def option(group: str, name: str) -> Callable[[type], type]:
    """Register a schema as the option `name` of a config group (`vae train model=conv`)."""

    def add(schema: type) -> type:
        if name in OPTIONS.setdefault(group, {}):
            raise ValueError(f"{group} option '{name}' is registered twice")
        names = {f.name: f for f in dataclasses.fields(schema)}
        if "name" not in names or names["name"].default != name:
            raise ValueError(f"{schema.__name__}.name must default to '{name}'")
        OPTIONS[group][name] = schema
        return schema

    return add


class GroupBase:
    """The base of a group's option schemas. Called with `name=<option>`, the base builds that option's
    schema instead: `ModelConfig(name="mlp", hidden_dims=[16])` is `MlpConfig(hidden_dims=[16])`."""

    group: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("group") and isinstance(kwargs.get("name"), str):
            cls = OPTIONS.get(cls.group, {}).get(kwargs["name"], cls)
        return super().__new__(cls)


def schema_of(node: Any, declared: type | None = None) -> type | None:
    """The dataclass a config node follows: its structured type, else (an untyped section of a group)
    the schema of the option its `name` names, else the declared type."""
    typ = OmegaConf.get_type(node) if isinstance(node, DictConfig) else type(node)
    if dataclasses.is_dataclass(typ):
        return typ
    group = getattr(declared, "group", "") if declared is not None else ""
    if group and isinstance(node, DictConfig | dict) and node.get("name") in OPTIONS.get(group, {}):
        return OPTIONS[group][node.get("name")]
    return declared if declared is not None and dataclasses.is_dataclass(declared) else None


def check_node(node: Any, prefix: str = "", schema: type | None = None) -> None:
    """Check every key of `node` (and its sections) against its schema's rules, in field order.
    Raises ConfigError `<key>=<value> is invalid: <rule> (override it, ...)` for the first broken one."""
    schema = schema or schema_of(node)
    if schema is None:
        return
    hints = type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in node:  # absent from an untyped node, or MISSING
            continue
        value = node[f.name]
        sub = schema_of(value, hints.get(f.name)) if isinstance(value, DictConfig) else None
        if sub is not None:
            check_node(value, f"{prefix}{f.name}.", sub)
            continue
        spec = spec_of(f)
        problem = spec.problem(value) if spec else None
        if problem:
            fail(f"{prefix}{f.name}", spec.shown(value), problem)


@functools.cache
def type_hints(schema: type) -> dict[str, type]:
    """A schema's fields that are classes (int, str, a section's dataclass), by name."""
    return {k: v for k, v in typing.get_type_hints(schema).items() if isinstance(v, type)}


def fail(key: str, value: Any, rule: str) -> None:
    raise ConfigError(f"{key}={value} is invalid: {rule} (override it, e.g. `{key}=<value>`)")


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """A cross-key rule that no single field can state."""
    if not ok:
        fail(key, value, rule)
