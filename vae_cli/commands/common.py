"""What the checkpoint commands (sample, reconstruct, evaluate, embed, score) share: open the run, pick the
output folder, rebuild the training data, pick a split."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from vae_cli.api import Trained, read_checkpoint
from vae_cli.data import DataBundle, create_dataset
from vae_cli.data.base import Split
from vae_cli.errors import CheckpointError, ConfigError, DataError
from vae_cli.paths import Output, check_out, is_output_file
from vae_cli.tensorboard import TensorBoard
from vae_cli.training.runtime import resolve_device, seed_everything

log = logging.getLogger("vae")


def open_run(
    cfg: DictConfig, run_dir: Path, validate: Callable[[DictConfig], None]
) -> tuple[Trained, Output]:
    """What every checkpoint command does first: check its config, seed, load the checkpoint on the
    chosen device, and pick where the outputs go."""
    validate(cfg)
    seed_everything(cfg.seed)
    trained = read_checkpoint(cfg.ckpt, resolve_device(cfg.device))
    return trained, output_dir(cfg, run_dir)


def output_dir(cfg: DictConfig, run_dir: Path) -> Output:
    """Where a command writes: `out=<folder>` (also Hydra's run folder unless it lies inside another
    run), or `out=<file>` (e.g. samples.png: the command's main output, its others beside it with the same
    stem), else the command's Hydra run folder.
    `output_dir(...).path("samples.png")` is that output's path; an existing file is never overwritten,
    and a folder holding another run (.hydra/, checkpoints/) is refused."""
    if not cfg.out:
        run_dir.mkdir(parents=True, exist_ok=True)
        return Output(run_dir)
    out = Path(cfg.out).expanduser()
    if os.path.abspath(out) != os.path.abspath(run_dir):  # Hydra's own .hydra/ is in its run folder
        check_out(str(cfg.out), "")
    if is_output_file(str(cfg.out)):
        out.parent.mkdir(parents=True, exist_ok=True)
        return Output(out.parent, out)
    out.mkdir(parents=True, exist_ok=True)
    return Output(out)


def load_data(trained: Trained, data_dir: str | None) -> DataBundle:
    """The dataset the model was trained on, rebuilt from the checkpoint's config (same splits, same seed)."""
    root = data_dir or trained.config.get("data_dir") or "data"
    try:
        return create_dataset(trained.dataset, root)
    except ConfigError as e:  # the checkpoint's dataset settings, not the user's command line
        raise CheckpointError(f"{trained.path}: cannot rebuild its dataset: {e}") from None


def pick_split(data: DataBundle, name: str, limit: int = 0) -> Split:
    """data.train/val/test, cut to its first `limit` examples when limit > 0."""
    split = getattr(data, name)
    if len(split) == 0:
        raise DataError(f"the {name} split of {data.name} is empty: choose another with split=train|val|test")
    if limit and limit < len(split):
        split = split.subset(torch.arange(limit))
    return split


def first_images(split: Split, n: int) -> torch.Tensor:
    """The first n uint8 images (n, C, H, W) of a split, in memory or on disk."""
    return split.take(range(min(n, len(split))))


def run_tensorboard(trained: Trained) -> TensorBoard | None:
    """A writer into the training run's tensorboard/ folder, or None (with a warning) when it has none."""
    folder = trained.run_dir / "tensorboard" if trained.run_dir else None
    if folder is None or not folder.is_dir():
        log.warning(
            "log_to_run=true: %s has no training run tensorboard/ folder beside it; not logged", trained.path
        )
        return None
    return TensorBoard(folder)
