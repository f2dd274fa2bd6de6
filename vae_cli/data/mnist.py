"""MNIST and Fashion-MNIST from their IDX files (gzipped or not), downloaded through torchvision.

Files are looked for in `<data_dir>/<MNIST|FashionMNIST>/raw/` (torchvision's layout) and, for
Fashion-MNIST, in Debian's `/usr/share/datasets/fashion-mnist/` (package dataset-fashion-mnist; Debian
recompressed the .gz files, so their md5 differs from torchvision's list, while the images are identical).
"""

from __future__ import annotations

import contextlib
import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from vae_cli.config import DatasetConfig
from vae_cli.data.base import DATASETS, DataBundle, ImageSplit, finish_bundle
from vae_cli.errors import ConfigError, DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: label i's name, as `anomaly_class=` and `dataset.exclude_classes=` accept it (case and punctuation
#: ignored: `T-Shirt`, `tshirt`, `ankle_boot` work too) and score's tables show it. MNIST's are digits.
MNIST_CLASSES = [str(digit) for digit in range(10)]
#: Fashion-MNIST's ten classes (Xiao et al. 2017: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal,
#: Shirt, Sneaker, Bag, Ankle boot), spelt to be typed on a command line: no slash, no space.
FASHION_MNIST_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 <dtype> <ndim>, ndim big-endian int32 sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}; delete it and download or copy it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); replace it with the original file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (incomplete header); download or copy it again")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path} is truncated or corrupt: {len(data) - header} data bytes, expected {expected} "
            f"for shape {dims}; download or copy it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an uint8 array as an IDX file (`path`, or `path`.gz): magic 0x0000 0x08 <ndim>, the sizes
    as big-endian int32, then the bytes. For tests and benchmarks that build datasets on disk."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _find(folders: list[Path], name: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _download(torchvision_class: type, data_dir: Path) -> None:
    # Any failure means "not available offline", which the caller explains.
    with contextlib.suppress(Exception):
        torchvision_class(str(data_dir), train=True, download=True)
        torchvision_class(str(data_dir), train=False, download=True)


def load_idx_dataset(
    name: str,
    cfg: DatasetConfig,
    data_dir: Path,
    torchvision_class: type,
    extra_folders: tuple[Path, ...] = (),
    label_names: list[str] | None = None,
) -> DataBundle:
    raw = data_dir / torchvision_class.__name__ / "raw"
    folders = [raw, *extra_folders]
    paths = {key: _find(folders, fname) for key, fname in FILES.items()}
    if None in paths.values() and cfg.download:
        _download(torchvision_class, data_dir)
        paths = {key: _find(folders, fname) for key, fname in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(
            f"{name} files missing and could not be downloaded: put {', '.join(f + '[.gz]' for f in FILES.values())} "
            f"in {raw}/ (or set data_dir=/ VAE_DATA_DIR to where they are); missing: {', '.join(missing)}"
        )
    if cfg.image_size != 28 or cfg.channels != 1:
        raise ConfigError(f"{name} images are 1x28x28: remove dataset.image_size/dataset.channels overrides")

    def split(prefix: str) -> ImageSplit:
        images = read_idx(paths[f"{prefix}_images"])
        labels = read_idx(paths[f"{prefix}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{name} {prefix} files do not match: {images.shape} images, {labels.shape} labels"
            )
        return ImageSplit(
            torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
        )

    train, test = split("train"), split("test")
    if label_names is not None:
        for labels in (train.labels, test.labels):
            if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < len(label_names)):
                raise DataError(
                    f"{name} labels must be 0 to {len(label_names) - 1}, found {int(labels.min())} to "
                    f"{int(labels.max())}: are these {name}'s label files?"
                )
    return finish_bundle(name, cfg, train, test, label_names=label_names)


@DATASETS.register("mnist")
def mnist(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    from torchvision.datasets import MNIST

    return load_idx_dataset("mnist", cfg, data_dir, MNIST, label_names=MNIST_CLASSES)


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: DatasetConfig, data_dir: Path) -> DataBundle:
    from torchvision.datasets import FashionMNIST

    return load_idx_dataset(
        "fashion_mnist", cfg, data_dir, FashionMNIST, (DEBIAN_FASHION_MNIST,), FASHION_MNIST_CLASSES
    )
