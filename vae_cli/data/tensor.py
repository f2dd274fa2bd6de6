"""Your own arrays: vectors (tabular data) or images from one file.

    vae train dataset=tensor dataset.path=data.csv dataset.label_column=class dataset.standardize=true \\
        model=mlp loss=gaussian loss.variance=global

Formats:
- `.npy`: one array.
- `.npz`: the array under key `x` (else the first array); labels under `dataset.label_column`, else `y`
  or `labels` when present.
- `.pt`/`.pth`: a tensor, or a dict of tensors with the same keys as .npz (read with
  `torch.load(weights_only=True)`, so the file cannot run code).
- `.csv`: a header row, then one example per row; every column is a feature except
  `dataset.label_column`. A value that is not a number stops with an error naming its line and column.
  Without a header (a first row of numbers) the columns are named 0, 1, 2, ...

Shapes: (N, D) are N vectors of D features, held as (N, 1, 1, D) images of one row, for `model=mlp`;
(N, H, W) are grey images; (N, C, H, W) (or (N, H, W, C) with C = 1 or 3) are images for any model.
uint8 values are pixels in 0..255 like every image dataset; other numbers are used as they are (as
float32). Labels are integers, or strings (numbered in sorted order, like image-folder classes).

`dataset.standardize=true` maps every feature to mean 0 and std 1 with the train split's statistics
(a constant feature keeps std 1); they are kept in the bundle (`stats`) and in checkpoints so that new
files are scored on the same scale. Standardised data calls for `loss=gaussian`.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch

from vae_cli.config import DatasetConfig
from vae_cli.data.base import (
    DATASETS,
    DataBundle,
    ImageSplit,
    binarize_static,
    fraction_split,
)
from vae_cli.data.image_folder import resolve_path
from vae_cli.errors import ConfigError, DataError

log = logging.getLogger("vae")

TENSOR_EXTENSIONS = frozenset({".npy", ".npz", ".pt", ".pth", ".csv"})
LABEL_KEYS = ("y", "labels")


def read_tensor_file(
    path: Path, label_column: str | None = None, optional: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """(examples (N, C, H, W) uint8 or float32, labels (N,) int64 or None, label names) from a file.
    With `optional`, a label column the file lacks is ignored instead of an error."""
    suffix = path.suffix.lower()
    if optional and label_column and not _has_labels(path, label_column):
        label_column = None
    if suffix == ".csv":
        data, raw_labels = read_csv(path, label_column)
    elif suffix == ".npy":
        if label_column:
            raise ConfigError(
                f"{path.name} holds one array, so it has no label column: put labels in an .npz "
                f"(keys x and y) or a CSV column, or drop label_column"
            )
        data, raw_labels = _load_npy(path), None
    elif suffix == ".npz":
        data, raw_labels = _from_mapping(_load_npz(path), path, label_column)
    elif suffix in (".pt", ".pth"):
        data, raw_labels = _load_pt(path, label_column)
    else:
        raise DataError(f"{path} is not a .npy, .npz, .pt or .csv file")
    examples = as_examples(data, path)
    labels, label_names = (None, []) if raw_labels is None else to_labels(raw_labels, len(examples), path)
    return examples, labels, label_names


def _has_labels(path: Path, label_column: str) -> bool:
    """Whether a CSV header or an .npz/.pt mapping names `label_column` (unreadable files: True, so that
    reading them explains the problem)."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            return label_column in [v.strip() for v in header]
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return label_column in archive.files
        if suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            return isinstance(obj, dict) and label_column in obj
        return False
    except Exception:  # noqa: BLE001
        return True


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a .npy array ({_first_line(e)})") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a .npz archive ({_first_line(e)})") from None


def _load_pt(path: Path, label_column: str | None) -> tuple[object, object | None]:
    import pickle
    import zipfile

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        why = "it holds objects other than tensors" if "weights_only" in str(e) else _first_line(e)
        raise DataError(
            f"cannot read {path} as tensors ({why}); save a tensor or a dict of tensors"
        ) from None
    if isinstance(obj, torch.Tensor):
        if label_column:
            raise ConfigError(f"{path.name} holds one tensor, so it has no labels '{label_column}'")
        return obj, None
    if isinstance(obj, dict):
        return _from_mapping(obj, path, label_column)
    raise DataError(f"{path} holds a {type(obj).__name__}: save a tensor, or a dict with keys x (and y)")


def _from_mapping(arrays: dict, path: Path, label_column: str | None) -> tuple[object, object | None]:
    keys = [str(k) for k in arrays]
    if not keys:
        raise DataError(f"{path} holds no arrays")
    if label_column and label_column not in arrays:
        raise DataError(f"{path} has no '{label_column}' for the labels; its keys are {', '.join(keys)}")
    label_key = label_column or next((k for k in LABEL_KEYS if k in arrays), None)
    data_keys = [k for k in keys if k != label_key]
    if not data_keys:
        raise DataError(f"{path} holds only labels ('{label_key}'): store the data under x")
    data_key = "x" if "x" in arrays else data_keys[0]
    if len(data_keys) > 1 and data_key != "x":
        log.info(
            "%s: using the array '%s' (keys: %s); name the data x to choose",
            path.name,
            data_key,
            ", ".join(keys),
        )
    return arrays[data_key], None if label_key is None else arrays[label_key]


def read_csv(path: Path, label_column: str | None) -> tuple[torch.Tensor, list[str] | None]:
    """A header row, then numbers: (float32 (N, D), the label column's raw strings or None)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(v.strip() for v in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} as CSV ({_first_line(e)})") from None
    if not rows:
        raise DataError(f"{path} is empty: expected a header row and one row per example")
    header = [v.strip() for v in rows[0][1]]
    if all(_is_number(v) for v in header):  # no header: columns are named by position
        columns, body = [str(i) for i in range(len(header))], rows
    else:
        columns, body = header, rows[1:]
    if not body:
        raise DataError(f"{path} has a header but no rows of data")
    if label_column is not None and label_column not in columns:
        raise DataError(
            f"{path} has no column '{label_column}' (dataset.label_column); its columns are {', '.join(columns)}"
        )
    label_at = columns.index(label_column) if label_column is not None else -1
    features = [i for i in range(len(columns)) if i != label_at]
    if not features:
        raise DataError(f"{path} has no feature columns besides the label column '{label_column}'")
    values = np.empty((len(body), len(features)), dtype=np.float32)
    labels: list[str] = []
    for r, (line, row) in enumerate(body):
        if len(row) != len(columns):
            raise DataError(
                f"{path}, line {line}: {len(row)} values, but {len(columns)} columns in the header"
            )
        for j, i in enumerate(features):
            text = row[i].strip()
            try:
                value = float(text)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                what = (
                    "is empty (a missing value)"
                    if not text
                    else f"'{text}' is not a {'number' if value is None else 'finite number'}"
                )
                hint = "" if label_column else " (if it is the label, name it with dataset.label_column)"
                raise DataError(f"{path}, line {line}, column '{columns[i]}': {what}{hint}")
            values[r, j] = value
        if label_at >= 0:
            labels.append(row[label_at].strip())
    return torch.from_numpy(values), (labels if label_at >= 0 else None)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def as_examples(data: object, path: Path) -> torch.Tensor:
    """An array -> examples (N, C, H, W): uint8 kept, everything else float32; NaN/inf refused."""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise DataError(f"{path} holds {data.dtype} values: store numbers")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{path}: the data is a {type(data).__name__}, not an array")
    if data.dtype.is_complex:
        raise DataError(f"{path} holds complex numbers: store real ones")
    x = data if data.dtype == torch.uint8 else data.to(torch.float32)
    if x.ndim == 2:
        x = x[:, None, None, :]  # vectors: one row of D features
    elif x.ndim == 3:
        x = x[:, None]  # grey images
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
            x = x.permute(0, 3, 1, 2)  # channels last -> channels first
    else:
        raise DataError(
            f"{path} holds an array of shape {tuple(data.shape)}: expected (N, D) vectors, (N, H, W) or "
            f"(N, C, H, W) images"
        )
    if len(x) == 0 or x[0].numel() == 0:
        raise DataError(f"{path} holds no examples (shape {tuple(data.shape)})")
    if x.is_floating_point():
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bad.any():
            raise DataError(
                f"{path}: example {int(bad.nonzero()[0])} (0-based) holds NaN or inf, as do {int(bad.sum())} "
                f"in all; fix or drop them"
            )
    return x.contiguous()


def to_labels(raw: object, n: int, path: Path) -> tuple[torch.Tensor, list[str]]:
    """Integer labels as they are; strings numbered in sorted order (their names returned)."""
    if isinstance(raw, list):  # CSV strings: numbers when every one is an integer
        if all(_is_integer(v) for v in raw):
            return torch.tensor([int(float(v)) for v in raw], dtype=torch.int64), []
        names = sorted(set(raw))
        index = {name: i for i, name in enumerate(names)}
        return torch.tensor([index[v] for v in raw], dtype=torch.int64), names
    labels = torch.from_numpy(np.asarray(raw)) if isinstance(raw, np.ndarray) else raw
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != n:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(raw).__name__
        raise DataError(f"{path}: the labels must be one number per example ({n}), got {shape}")
    if labels.is_floating_point():
        if not (torch.isfinite(labels).all() and (labels == labels.round()).all()):
            raise DataError(f"{path}: the labels must be integers (class numbers)")
    elif labels.dtype == torch.bool or labels.dtype.is_complex:
        labels = labels.to(torch.int64)
    return labels.to(torch.int64), []


def _is_integer(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value == int(value)


def standardize(x: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    """(x - mean) / std per feature; uint8 pixels are taken as x / 255 first."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean, std = _stats_tensors(stats, x)
    return (x - mean) / std


def unstandardize(x: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    """The inverse of `standardize`: back to the file's units (pixels in [0, 1] for uint8 files)."""
    mean, std = _stats_tensors(stats, x)
    return x * std + mean


def _stats_tensors(stats: dict[str, list[float]], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = x.shape[1:]
    mean = torch.tensor(stats["mean"], dtype=x.dtype, device=x.device)
    std = torch.tensor(stats["std"], dtype=x.dtype, device=x.device)
    if mean.numel() != math.prod(shape):
        raise DataError(
            f"the standardisation statistics have {mean.numel()} features, the data {math.prod(shape)}"
        )
    return mean.view(shape), std.view(shape)


def feature_stats(x: torch.Tensor) -> dict[str, list[float]]:
    """Mean and std (population) per feature of a split; a constant feature gets std 1."""
    flat = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).flatten(1).double()
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    constant = std < 1e-8
    if constant.any():
        log.info("dataset.standardize: %d constant feature(s) keep std 1", int(constant.sum()))
    std[constant] = 1.0
    return {"mean": mean.tolist(), "std": std.tolist()}


def in_unit_range(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8 or bool(x.min() >= 0 and x.max() <= 1)


@DATASETS.register("tensor")
def tensor(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    path = resolve_path(cfg.path, data_dir, "tensor")
    if path.is_dir():
        raise DataError(
            f"dataset.path={cfg.path} is a folder; dataset=tensor reads one file (.npy, .npz, .pt, .csv); "
            f"for a folder of images use dataset=image_folder"
        )
    if path.suffix.lower() not in TENSOR_EXTENSIONS:
        raise DataError(f"dataset.path={cfg.path}: dataset=tensor reads .npy, .npz, .pt or .csv files")
    x, labels, label_names = read_tensor_file(path, cfg.label_column)
    unit = in_unit_range(x)
    if cfg.binarize != "none" and (cfg.standardize or not unit):
        raise ConfigError(
            f"dataset.binarize={cfg.binarize} needs values in [0, 1] (uint8 pixels, or floats in [0, 1], "
            f"not standardised): use dataset.binarize=none"
        )
    if cfg.binarize == "static" and x.dtype != torch.uint8:
        raise ConfigError("dataset.binarize=static needs uint8 pixels: use dataset.binarize=dynamic")
    names = [str(i) for i in range(len(x))]  # the example's row in the file, 0-based
    train, val, test = fraction_split(len(x), cfg, labels, label_names)
    everything = ImageSplit(x, labels, None, names)
    splits = [everything.subset(index) for index in (train, val, test)]
    stats = None
    if cfg.standardize:
        stats = feature_stats(splits[0].images)
        splits = [ImageSplit(standardize(s.images, stats), s.labels, None, s.names) for s in splits]
        unit = False
    if cfg.binarize == "static":
        splits = [binarize_static(s, cfg.seed + 1000 + i) for i, s in enumerate(splits)]
    shape = tuple(x.shape[1:])
    kind = f"{shape[-1]}-feature vectors" if shape[:2] == (1, 1) else f"{'x'.join(map(str, shape))} images"
    log.info(
        "tensor: %d examples (%s, %s%s) from %s; %d train / %d val / %d test",
        len(x),
        kind,
        "uint8 pixels" if x.dtype == torch.uint8 else "float",
        ", standardised" if stats else "",
        path,
        len(train),
        len(val),
        len(test),
    )
    return DataBundle(
        "tensor",
        *splits,
        shape=shape,
        binarize=cfg.binarize,
        label_names=label_names,
        stats=stats,
        unit_range=unit,
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
