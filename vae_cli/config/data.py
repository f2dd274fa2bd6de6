"""The `dataset` group: one schema per dataset (`vae train dataset=<name>`), on a base of the common keys."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from vae_cli.config.fields import GroupBase, check, check_node, choice, key, option

BINARIZE = ("none", "static", "dynamic")
NAME = "the dataset, chosen with dataset=<name>"
PIXELS = "pixels: none | static (each pixel drawn once) | dynamic (a fresh Bernoulli draw per batch)"
FRACTION = "must be in [0, 1)"
#: seeds go to numpy's global generator too, which takes 32 bits: a larger seed would wrap around
#: (2^32 would repeat seed 0), so it is refused instead
SEED_MAX = 2**32 - 1
#: 4096 x 4096 pixels is 16.8 M values per image (64 MiB in float32, one channel), beyond any image a
#: VAE here is built for (the built-in recipes use 28 to 64): larger sizes only exhaust memory
IMAGE_SIZE_MAX = 4096


def seed_key(default: int, help: str) -> int:
    """A seed: an integer in [0, 2^32 - 1]."""
    return key(
        default,
        help,
        min=0,
        lt=SEED_MAX + 1,
        rule=f"must be in [0, {SEED_MAX}] (0 to 2^32 - 1)",
    )


@dataclass
class DatasetConfig(GroupBase):
    """The keys every dataset has."""

    group = "dataset"

    name: str = key(MISSING, NAME)
    binarize: str = key("none", PIXELS, choices=BINARIZE, ignore_case=True)
    in_memory: str = choice(
        "auto",
        "auto: batches from memory when the data is there, else a DataLoader | true: load it all into memory "
        "first | false: always a DataLoader",
        "auto",
        "true",
        "false",
    )
    seed: int = seed_key(
        0, "the data's own seed: the held-out splits, static binarisation, synthetic generation"
    )
    exclude_classes: list[str] = key(
        [], "labels (or label numbers) left out of train and val, not test, e.g. [3] (anomaly detection)"
    )


def _image_size(default: int, help: str = "images are resized to image_size x image_size") -> int:
    return key(
        default,
        help,
        min=1,
        lt=IMAGE_SIZE_MAX + 1,
        rule=f"must be in [1, {IMAGE_SIZE_MAX}] (larger images do not fit in memory)",
    )


def _channels(default: int, help: str = "1: grey | 3: RGB") -> int:
    return key(default, help, min=1, check=(lambda v: v in (1, 3), "must be 1 or 3"))


def _cache() -> str:
    return choice(
        "true",
        "the decoded-image cache: true: decode the images once into a .npy file and read that on later runs "
        "| false: decode every time, write nothing | rebuild: decode again and replace the cache",
        "true",
        "false",
        "rebuild",
    )


def _cache_dir() -> str | None:
    return key(
        None,
        "the folder of the decoded-image cache; null: .vae_cache/ next to the images when that is writable, "
        "else $VAE_CACHE_DIR, else ~/.cache/vae",
    )


@option("dataset", "mnist")
@dataclass
class MnistConfig(DatasetConfig):
    """MNIST digits, 1x28x28: 60,000 training images (val_size of them held out) and 10,000 test."""

    name: str = key("mnist", NAME)
    binarize: str = key("dynamic", PIXELS, choices=BINARIZE, ignore_case=True)
    image_size: int = _image_size(28, "1x28x28 images: leave it at 28")
    channels: int = _channels(1, "1x28x28 images: leave it at 1")
    val_size: int = key(1000, "validation images carved from the training images (with dataset.seed)", min=0)
    download: bool = key(True, "download the files into data_dir when they are missing")


@option("dataset", "fashion_mnist")
@dataclass
class FashionMnistConfig(MnistConfig):
    """Fashion-MNIST clothes, 1x28x28, split like MNIST (also read from Debian's dataset-fashion-mnist)."""

    name: str = key("fashion_mnist", NAME)


@option("dataset", "celeba")
@dataclass
class CelebaConfig(DatasetConfig):
    """CelebA aligned faces, centre-cropped and resized, in the splits of list_eval_partition.txt.
    Continuous RGB pixels: pair it with loss=gaussian."""

    name: str = key("celeba", NAME)
    image_size: int = _image_size(64)
    channels: int = _channels(3)
    crop: int = key(148, "the centre crop (pixels) before the resize; 0: none", min=0)
    download: bool = key(True, "download the files into data_dir when they are missing")
    cache: str = _cache()
    cache_dir: str | None = _cache_dir()


@option("dataset", "synthetic")
@dataclass
class SyntheticConfig(DatasetConfig):
    """dSprites-like shapes generated from dataset.seed (no download): binary pixels, ground-truth
    factors kept (for the MIG). The defaults (6,000 images of 32x32) make the default `vae train` a
    first result in about a minute on a laptop CPU; experiment=shapes64 is the full 64x64 recipe."""

    name: str = key("synthetic", NAME)
    image_size: int = _image_size(32, "the shapes' image size: 32 or 64 (any size >= 16 works)")
    channels: int = _channels(1, "1: the shapes are grey")
    size: int = key(6000, "images generated in all", min=0)
    val_size: int = key(1000, "of them held out for validation", min=0)
    test_size: int = key(1000, "of them held out for test", min=0)


@dataclass
class OwnDataConfig(DatasetConfig):
    """The keys of your own data, split by fraction."""

    path: str | None = key(None, "required: the path (relative to the working folder, else to data_dir)")
    val_fraction: float = key(
        0.1, "share of the examples held out for validation", min=0, lt=1, rule=FRACTION
    )
    test_fraction: float = key(0.1, "share of the examples held out for test", min=0, lt=1, rule=FRACTION)


@option("dataset", "image_folder")
@dataclass
class ImageFolderConfig(OwnDataConfig):
    """Your own images: every .png/.jpg/.jpeg/.bmp/.gif/.webp/.tif(f) under dataset.path, recursively;
    when every image is in a sub-folder, the sub-folder names are the labels."""

    name: str = key("image_folder", NAME)
    path: str | None = key(
        None, "required: the folder of images (relative to the working folder, else to data_dir)"
    )
    image_size: int = _image_size(64, "images are centre-cropped to a square, then resized to this")
    channels: int = _channels(3)
    cache: str = _cache()
    cache_dir: str | None = _cache_dir()


@option("dataset", "tensor")
@dataclass
class TensorConfig(OwnDataConfig):
    """Your own arrays: .npy, .npz (x, y), .pt (a tensor or a dict with x, y) or .csv (a header row,
    numbers). (N, D) arrays are vectors (use model=mlp), (N, H, W) and (N, C, H, W) images."""

    name: str = key("tensor", NAME)
    path: str | None = key(
        None, "required: the file, .npy/.npz/.pt/.csv (relative to the working folder, else to data_dir)"
    )
    binarize: str = key("none", f"{PIXELS}; values in [0, 1] only", choices=BINARIZE, ignore_case=True)
    label_column: str | None = key(
        None, "the CSV column (or .npz/.pt key) holding labels; .npz/.pt use y or labels when present"
    )
    standardize: bool | None = key(
        None,
        "scale each feature to mean 0, std 1 by the train split's statistics (use loss=gaussian); null "
        "(auto): true for vectors (unless loss=bernoulli), false for images",
    )


def validate_own_data(ds: DictConfig) -> None:
    """The fractions of dataset=image_folder and dataset=tensor: each in [0, 1), together below 1."""
    if "val_fraction" not in ds or "test_fraction" not in ds:
        return
    check_node(ds, "dataset.")
    total = ds.val_fraction + ds.test_fraction
    check(total < 1, "dataset.val_fraction", ds.val_fraction, f"+ dataset.test_fraction = {total} >= 1")
