"""User-facing errors: anything the user can fix by changing an argument, a file or a path."""

from __future__ import annotations


class VaeError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


class ConfigError(VaeError):
    """A config value is of the right type but not allowed (range, choice, combination)."""


class DataError(VaeError):
    """A dataset is missing, incomplete or unreadable."""


class CheckpointError(VaeError):
    """A checkpoint is missing, truncated, foreign or incompatible."""
