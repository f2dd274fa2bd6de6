"""Vectors out of `vae sample` and `vae reconstruct` for a model of tabular data (dataset=tensor with
(N, D) arrays, held as (N, 1, 1, D) "images" of one row): numbers, not pictures.

Each output is a `.csv` (a header of the feature names, one row per vector, in the data's original
units: dataset.standardize undone with the checkpoint's statistics) and a `.npy` of the same (N, D)
float32 values. The feature names are the training CSV's column names (its label column left out)
when that file can still be found, else f0 .. f{D-1}.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae_cli.data.readers import csv_columns
from vae_cli.io import write_atomically, write_text

log = logging.getLogger("vae")


def is_vectors(image_shape: Sequence[int]) -> bool:
    """A model of D-feature vectors: its inputs are (1, 1, D)."""
    return tuple(image_shape)[:2] == (1, 1)


def in_data_units(trained, vectors: torch.Tensor) -> torch.Tensor:  # noqa: ANN001  (api.Trained)
    """(N, 1, 1, D) or (N, D) model-space values -> (N, D) in the training file's units: the
    standardisation undone when training standardised (the checkpoint's statistics, else those of its
    rebuilt training split)."""
    x = vectors.detach().float().cpu().reshape(len(vectors), -1)
    if not trained.dataset.get("standardize", False):
        return x
    from vae_cli.data.tensor import unstandardize

    stats = trained.data_stats
    if stats is None:  # an older checkpoint: the statistics of its rebuilt training split
        from vae_cli.commands.common import load_data

        stats = load_data(trained, None).stats
    return unstandardize(x[:, None, None, :], stats).reshape(len(x), -1) if stats else x


def feature_names(trained, num_features: int, data_dir: str | None = None) -> list[str]:  # noqa: ANN001
    """The training CSV's feature columns: as the checkpoint holds them, else from the CSV's header when it
    can be read (cheaply: one line), else f0 .. f{D-1}."""
    fallback = [f"f{i}" for i in range(num_features)]
    saved = getattr(trained, "feature_names", None)
    if saved is not None and len(saved) == num_features:
        return list(saved)
    path_text = trained.dataset.get("path")
    if trained.dataset.name != "tensor" or not path_text or not str(path_text).lower().endswith(".csv"):
        return fallback
    root = Path(data_dir or trained.config.get("data_dir") or "data")
    given = Path(str(path_text)).expanduser()
    candidates = [given] if given.is_absolute() else [given, root / given]
    for candidate in candidates:
        try:
            columns = csv_columns(candidate)  # named as dataset=tensor names them
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        label = trained.dataset.get("label_column")
        names = [c for c in columns if c != label]
        if len(names) == num_features:
            return names
        break
    return fallback


def write_vectors(
    csv_path: Path,
    npy_path: Path,
    values: torch.Tensor,
    names: list[str],
    extra: dict[str, Sequence] | None = None,
) -> list[Path]:
    """A CSV (the `extra` columns first, e.g. a traversal's dim and z, then one per feature) and a .npy
    (the (N, D) values alone) of the same vectors, both written atomically. Returns the two paths."""
    extra = extra or {}
    array = values.detach().float().cpu().numpy().astype(np.float32)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow([*extra, *names])
    for i, row in enumerate(array.tolist()):
        writer.writerow([*(column[i] for column in extra.values()), *(f"{v:.7g}" for v in row)])
    write_text(csv_path, buffer.getvalue())
    write_atomically(npy_path, lambda f: np.save(f, array))
    return [csv_path, npy_path]
