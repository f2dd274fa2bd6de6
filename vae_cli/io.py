"""Files that are never left half-written: every output goes through `write_atomically`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over `path`: a crash (or a
    full disk) leaves the previous file, never a truncated one. OSError propagates; no temporary file is
    left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after a successful rename


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    """JSON with NaN and infinities written as null: the file stays valid JSON."""
    write_text(path, json.dumps(_finite(data), indent=2) + "\n")


def copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as source:
        write_atomically(dst, lambda f: shutil.copyfileobj(source, f))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
