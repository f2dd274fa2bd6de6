"""Datasets, registered by name. Each builder returns a `DataBundle`: train/val/test splits of uint8
images (N, C, H, W) plus what the rest of the tool needs to know about them."""

from vae_cli.data.base import DataBundle, ImageSplit, create_dataset
from vae_cli.data.loaders import BatchSource, make_batches, prepare_batch

# Importing the dataset modules registers them.
from vae_cli.data import celeba, image_folder, mnist, synthetic, tensor  # noqa: E402,F401  isort: skip

__all__ = ["BatchSource", "DataBundle", "ImageSplit", "create_dataset", "make_batches", "prepare_batch"]
