from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch.utils.data import Dataset

from vae_cli.config import DatasetConfig
from vae_cli.errors import ConfigError, DataError
from vae_cli.registry import Registry

log = logging.getLogger("vae")

#: name -> builder(cfg, data_dir) -> DataBundle
DATASETS: Registry = Registry("dataset")


class Split(Protocol):
    """What every split offers, held in memory (`ImageSplit`) or read from disk (`FileSplit`).

    Examples are uint8 images (C, H, W) in 0..255; tensor data (dataset=tensor) may hold float32 values
    instead, used as they are; vectors of D features are held as (1, 1, D)."""

    labels: torch.Tensor | None  # (N,) int64 class labels, or None
    factors: torch.Tensor | None  # (N, F) ground-truth generative factors (synthetic data), or None
    names: list[str] | None  # where each example came from (a file, a row), for reports
    in_memory: bool  # True: every example is in `images`, one tensor

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> torch.Tensor: ...

    def subset(self, index: torch.Tensor) -> Split:
        """The examples at `index` (a 1-D index tensor), with their labels, factors and names."""
        ...

    def take(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The examples at `index`, stacked: (len(index), C, H, W)."""
        ...


@dataclass
class ImageSplit:
    """One split held in memory: the examples as one tensor (N, C, H, W), optional labels and factors."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    factors: torch.Tensor | None = None
    names: list[str] | None = None
    in_memory: ClassVar[bool] = True

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def subset(self, index: torch.Tensor) -> ImageSplit:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        names = None if self.names is None else [self.names[i] for i in index.tolist()]
        return ImageSplit(self.images[index], pick(self.labels), pick(self.factors), names)

    def take(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return self.images[torch.as_tensor(index, dtype=torch.long)]


class FileSplit(Dataset):
    """One split read from disk: `decode(file)` gives each example on demand (in DataLoader workers), a
    uint8 (C, H, W) tensor, or None when the file cannot be read."""

    in_memory = False
    factors = None

    def __init__(
        self,
        files: list[Path],
        decode: Callable[[Path], torch.Tensor | None],
        labels: torch.Tensor | None = None,
        names: list[str] | None = None,
    ) -> None:
        self.files, self.decode, self.labels = list(files), decode, labels
        self.names = names if names is not None else [f.name for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.decode(self.files[i])
        if image is None:
            raise DataError(f"cannot read image {self.files[i]} (it changed since the folder was scanned?)")
        return image

    def subset(self, index: torch.Tensor) -> FileSplit:
        picked = copy.copy(self)  # the same class and decoder
        rows = index.tolist()
        picked.files = [self.files[i] for i in rows]
        picked.names = [self.names[i] for i in rows]
        picked.labels = None if self.labels is None else self.labels[index]
        return picked

    def take(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        rows = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return torch.stack([self[i] for i in rows])


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    shape: tuple[int, int, int]  # (C, H, W)
    binarize: str = "none"
    factor_names: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)  # label i is label_names[i] (image folders, CSV)
    #: tensor data standardised with dataset.standardize: {"mean": [...], "std": [...]}, one value per
    #: feature (C * H * W), from the train split; x_model = (x_raw - mean) / std
    stats: dict[str, list[float]] | None = None
    unit_range: bool = True  # prepared values lie in [0, 1] (images); False for other float data
    #: a table read from a CSV file: its feature columns' names, in order (kept in checkpoints, so that a
    #: file scored later is matched by column name); None for other data
    feature_names: list[str] | None = None

    @property
    def num_dims(self) -> int:
        c, h, w = self.shape
        return c * h * w


def check_loss_range(data: DataBundle, loss: str) -> None:
    """loss=bernoulli models values in [0, 1] and loss=logistic 8-bit pixels: other data (e.g. a tensor
    file of counts, standardised features) is refused before training, instead of a non-finite loss
    blamed on the learning rate later, or bits per dimension that compare with nothing."""
    if loss == "logistic":
        check_8bit(data, loss)
        return
    if loss != "bernoulli" or data.unit_range:
        return
    splits = [s for s in (data.train, data.val, data.test) if s.in_memory and len(s)]
    if not splits:
        return
    low = min(float(s.images.min()) for s in splits)
    high = max(float(s.images.max()) for s in splits)
    if low < 0 or high > 1:
        raise ConfigError(
            f"loss={loss} needs values in [0, 1]; the data spans [{low:.4g}, {high:.4g}]: use "
            f"loss=gaussian (and dataset.standardize=true) or scale it"
        )


def holds_8bit_pixels(data: DataBundle) -> bool:
    """Whether the examples are 8-bit pixels as stored (uint8, 0..255), not binarised: the data whose
    -log p(x) in bits per dimension compares with published numbers."""
    # one example per split: every example of a split has its dtype (on disk: the decoder's, uint8)
    return data.binarize == "none" and all(
        s[0].dtype == torch.uint8 for s in (data.train, data.val, data.test) if len(s)
    )


def check_8bit(data: DataBundle, loss: str) -> None:
    """A likelihood of 8-bit pixels (the discretised logistic's 256 bins) needs 8-bit data. Raises
    ConfigError, one line."""
    if data.binarize != "none":
        raise ConfigError(
            f"loss={loss} models 8-bit pixels (0..255) and dataset.binarize={data.binarize} makes them 0 or 1: "
            f"set dataset.binarize=none, or use loss=bernoulli for binary data"
        )
    if not holds_8bit_pixels(data):
        what = "standardised values (dataset.standardize)" if data.stats else "float values, not uint8 pixels"
        raise ConfigError(
            f"loss={loss} models 8-bit pixels (uint8, 0..255); {data.name} holds {what}: use loss=gaussian, "
            f"or store the images as uint8"
        )


def class_indices(
    values: list | tuple, label_names: list[str], what: str, known: Sequence[int] | None = None
) -> list[int]:
    """Label values from the command line -> label indices. A value is a label's name (exactly, else
    ignoring case, else ignoring case and punctuation, e.g. `T-Shirt` or `tshirt` for `t-shirt`: when
    that picks one name) or its number. The numbers allowed are `known` (the labels there are), else
    0..len(label_names)-1 for named labels, else any; anything else is an error naming the labels."""
    allowed = set(known) if known is not None else set(range(len(label_names))) if label_names else None
    out = []
    for value in values:
        text = str(value).strip()
        index = _name_index(text, label_names)
        if index is None and text.lstrip("-").isdigit():
            index = int(text)
            if allowed is not None and index not in allowed:
                index = None
        if index is None:
            raise ConfigError(f"{what}: unknown label '{text}': {describe_labels(label_names, allowed)}")
        out.append(index)
    return out


def _name_index(text: str, label_names: list[str]) -> int | None:
    """The index of the label named `text`: exactly, else by the first looser match that is unique."""
    if text in label_names:
        return label_names.index(text)
    for loose in (str.casefold, lambda t: re.sub(r"[\W_]+", "", t.casefold())):
        matches = [i for i, name in enumerate(label_names) if loose(name) == loose(text)]
        if len(matches) == 1:
            return matches[0]
    return None


def describe_labels(label_names: list[str], known: Sequence[int] | set[int] | None = None) -> str:
    """'the labels are ...' for an error message: the names (and their numbers), else the numbers."""
    if label_names:
        numbers = f"0 to {len(label_names) - 1}" if len(label_names) > 1 else "0"
        if label_names == [str(i) for i in range(len(label_names))]:
            return f"the labels are {numbers}"
        return f"the labels are {_listing(label_names)} (or their numbers, {numbers})"
    if not known:
        return "the data has no labels" if known is not None else "labels are numbers"
    numbers = sorted(known)
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 3:
        return f"the labels are {numbers[0]} to {numbers[-1]}"
    return f"the labels are {_listing([str(n) for n in numbers])}"


def _listing(items: list[str], most: int = 40) -> str:
    """`a, b, c`; past `most` items, the first ones and how many there are."""
    if len(items) <= most:
        return ", ".join(items)
    return f"{', '.join(items[: most - 1])}, ... ({len(items)} in all)"


def known_classes(labels: Sequence[torch.Tensor | None], label_names: list[str]) -> list[int] | None:
    """The label numbers there are: every named label, else those that occur in `labels`; None without
    labels."""
    if label_names:
        return list(range(len(label_names)))
    present = [t for t in labels if t is not None]
    if not present:
        return None
    return sorted(torch.cat([t.flatten() for t in present]).unique().tolist())


def split_sizes(n: int, cfg: DatasetConfig) -> tuple[int, int]:
    """(val, test) sizes for datasets split by fractions; at least one each when its fraction is > 0."""
    sizes = [max(1, round(f * n)) if f > 0 else 0 for f in (cfg.val_fraction, cfg.test_fraction)]
    if n - sum(sizes) < 1:
        raise DataError(
            f"{n} examples are too few to hold out dataset.val_fraction={cfg.val_fraction} and "
            f"dataset.test_fraction={cfg.test_fraction}: add data or lower the fractions"
        )
    return sizes[0], sizes[1]


def fraction_split(
    n: int, cfg: DatasetConfig, labels: torch.Tensor | None, label_names: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (train, val, test) of n examples, drawn once with dataset.seed; each sorted. The examples
    of dataset.exclude_classes then leave train and val (test keeps every class)."""
    n_val, n_test = split_sizes(n, cfg)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    train, val, test = train.sort().values, val.sort().values, test.sort().values
    if cfg.exclude_classes:
        drop = excluded_mask(labels, cfg, label_names)
        train, val = train[~drop[train]], val[~drop[val]]
        if len(train) == 0:
            raise ConfigError(f"dataset.exclude_classes={list(cfg.exclude_classes)} leaves no training data")
    return train, val, test


def excluded_mask(
    labels: torch.Tensor | None,
    cfg: DatasetConfig,
    label_names: list[str],
    known_labels: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """True for the examples whose label is in dataset.exclude_classes. A class that is not one of the
    data's (its label names, else the labels in `labels` and `known_labels`) is an error."""
    if labels is None:
        raise ConfigError(
            f"dataset.exclude_classes={list(cfg.exclude_classes)} needs labelled data; {cfg.name} has no labels"
        )
    known = known_classes([labels, *(known_labels or [])], label_names)
    classes = class_indices(list(cfg.exclude_classes), label_names, "dataset.exclude_classes", known)
    absent = [c for c in classes if not (labels == c).any()]
    if absent:
        log.warning("dataset.exclude_classes: label(s) %s do not occur in the training data", absent)
    return torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))


def drop_excluded(
    split: ImageSplit,
    cfg: DatasetConfig,
    label_names: list[str] | None = None,
    known_labels: list[torch.Tensor | None] | None = None,
) -> ImageSplit:
    """Drop the examples of dataset.exclude_classes (applied to train and val only: test keeps them)."""
    if not cfg.exclude_classes:
        return split
    keep = ~excluded_mask(split.labels, cfg, label_names or [], known_labels)
    if not keep.any():
        raise ConfigError(f"dataset.exclude_classes={list(cfg.exclude_classes)} leaves no training data")
    return split.subset(keep.nonzero().squeeze(1))


def split_off(split: ImageSplit, size: int, seed: int, what: str) -> tuple[ImageSplit, ImageSplit]:
    """Carve `size` examples out of `split` with a fixed seed: returns (rest, carved)."""
    if size >= len(split):
        raise ConfigError(
            f"dataset.{what}_size={size} leaves no training data ({len(split)} examples): use a smaller value"
        )
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(perm[size:].sort().values), split.subset(perm[:size].sort().values)


def binarize_static(split: ImageSplit, seed: int) -> ImageSplit:
    """Binarise once: each pixel is a Bernoulli draw of its intensity, fixed for good (0 or 255)."""
    g = torch.Generator().manual_seed(seed)
    probs = split.images.float() / 255.0
    images = (torch.bernoulli(probs, generator=g) * 255).to(torch.uint8)
    return ImageSplit(images, split.labels, split.factors, split.names)


def finish_bundle(
    name: str,
    cfg: DatasetConfig,
    train: ImageSplit,
    test: ImageSplit,
    factor_names: list[str] | None = None,
    label_names: list[str] | None = None,
) -> DataBundle:
    """Carve validation from train with the data's fixed seed; binarise statically if asked. Classes in
    dataset.exclude_classes leave train (and so val) before the carve; test keeps every class."""
    seed = cfg.seed
    train = drop_excluded(train, cfg, label_names, [test.labels])
    train, val = split_off(train, cfg.val_size, seed, "val")
    splits = [train, val, test]
    if cfg.binarize == "static":
        # A different stream per split, identical run after run.
        splits = [binarize_static(s, seed + 1000 + i) for i, s in enumerate(splits)]
    return DataBundle(
        name,
        *splits,
        shape=tuple(train.images.shape[1:]),
        binarize=cfg.binarize,
        factor_names=factor_names or [],
        label_names=list(label_names or []),
    )


def create_dataset(cfg: DatasetConfig, data_dir: str | Path) -> DataBundle:
    data_dir = Path(data_dir).expanduser()
    if data_dir.is_file():
        raise DataError(
            f"data_dir={data_dir} is a file: point it at a folder (data_dir=<folder>, or the environment "
            f"variable VAE_DATA_DIR)"
        )
    bundle = DATASETS.get(cfg.name)(cfg, data_dir)
    if cfg.exclude_classes and bundle.train.labels is None:
        raise ConfigError(f"dataset.exclude_classes needs labelled data; {cfg.name} has no labels")
    return bundle
