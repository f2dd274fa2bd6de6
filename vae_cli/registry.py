"""A name -> builder registry, so adding a dataset, model or likelihood means adding one function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from vae_cli.errors import ConfigError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(builder: T) -> T:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> T:
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} '{name}': choose one of {', '.join(self.names())}")
        return self._builders[name]

    def names(self) -> list[str]:
        return sorted(self._builders)
