"""`vae reconstruct`: originals above their reconstructions (z = mu), from a split or from your own images.

The originals are shown as they are (grey, never binarised); the model reconstructs what it takes as
input, binarised (with `seed`) when it was trained on binarised data. A model of vectors (tabular data)
writes originals.csv/.npy and reconstructions.csv/.npy instead, in the data's units (vae_cli/tabular.py).

Your images (`input=<file or folder>`) are read as `dataset=image_folder` reads its training images
(`vae_cli.data.readers`: a folder and its sub-folders, converted to the model's channels, centre-cropped
and resized to its size), and binarised like the training data when it was binarised.

`noise_level=<level>` corrupts the inputs first (`noise=gaussian|mask`, by default the training run's
`train.denoise`) and shows originals, corrupted inputs and the reconstructions of those: what a
denoising VAE (`train.denoise=...`) cleans up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from vae_cli.api import Trained
from vae_cli.commands.common import first_images, load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_reconstruct_config
from vae_cli.console import console, interleave_rows
from vae_cli.data.loaders import corrupt
from vae_cli.data.readers import read_images
from vae_cli.errors import DataError
from vae_cli.models import VAE
from vae_cli.models.conditional import check_labels, classes_of, conditioned, input_labels
from vae_cli.paths import Output
from vae_cli.pictures import grid_picture, save_picture, shown_and_input
from vae_cli.tabular import feature_names, in_data_units, is_vectors, write_vectors

log = logging.getLogger("vae")

BATCH = 256


def reconstruct(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_reconstruct_config)
    model = trained.model
    generator = trained.generator(cfg.seed)
    binarize = trained.dataset.binarize
    vectors = is_vectors(model.image_shape)

    names: list[str] = []  # your own images: each reconstruction is also written alone, by its name
    rows: list[str] = []  # vectors: the examples' rows in the training file
    if cfg.input and vectors:
        raise DataError(
            f"the model was trained on vectors of {model.image_shape[-1]} features: input= takes images; "
            f"reconstruct a split (split=train|val|test), or score a file with vae score input=<file>"
        )
    if cfg.input:
        path = Path(cfg.input).expanduser()
        if not path.exists():
            raise DataError(f"input={path} does not exist: pass an image file or a folder of images")
        found = read_images(path, model.image_shape, what=f"input={path}")
        images, names = (
            found.images,
            [str(Path(name).with_suffix("")).replace("/", "_") for name in found.names],
        )
        # a conditional model: each image's class, from sub-folders named by class
        labels, _ = input_labels(found.labels, found.label_names, classes_of(model), f"input={path}")
        # Binarised training data (static or dynamic) means binary inputs: draw them like dynamic does.
        binarize = "dynamic" if binarize in ("static", "dynamic") else binarize
        source = str(cfg.input)
    else:
        data = load_data(trained, cfg.data_dir)
        split = pick_split(data, cfg.split)
        images = first_images(split, cfg.n)
        rows = list(split.names or [])[: len(images)]
        source = f"{data.name} {cfg.split}"
        labels = None if split.labels is None else split.labels[: len(images)]
    # a conditional model: labelled examples of its classes (else one line)
    check_labels(model, labels, f"input={cfg.input}" if cfg.input else source)
    labels = None if classes_of(model) is None else labels.to(trained.device)
    # What is shown as the original: the real image (grey, never binarised); what the model is given:
    # binarised (with `seed`) when it was trained on binarised data, as score's extremes.png and
    # TensorBoard's val/reconstructions show them.
    shown, x = shown_and_input(images.to(trained.device), binarize, generator)
    noisy, noise = None, ""
    if cfg.noise_level > 0:  # what a denoising VAE was trained for: corrupted inputs, clean targets
        trained_noise = OmegaConf.select(trained.config, "train.denoise", default="none")
        noise = cfg.noise or (trained_noise if trained_noise in ("gaussian", "mask") else "gaussian")
        noisy = corrupt(x, noise, cfg.noise_level, generator, clamp=not vectors)
    recon = reconstruct_images(model, x if noisy is None else noisy, labels)

    def host(t: torch.Tensor) -> torch.Tensor:  # pictures are clamped to [0, 1]; vectors stay as they are
        return t.float().cpu() if vectors else t.float().clamp(0, 1).cpu()

    shown, x, recon = host(shown), host(x), host(recon)
    noisy = host(noisy) if noisy is not None else None
    noise_mse = {}
    if noisy is not None:
        noise_mse = {
            "noisy_mse": float((noisy - x).pow(2).flatten(1).sum(1).mean()),
            "reconstruction_mse": float((recon - x).pow(2).flatten(1).sum(1).mean()),
        }
        log.info(
            "%s noise at level %g: squared error to the clean inputs, per example: corrupted %.2f, "
            "reconstructed %.2f",
            noise,
            cfg.noise_level,
            noise_mse["noisy_mse"],
            noise_mse["reconstruction_mse"],
        )
    if vectors:  # tabular data: the vectors as numbers, in the data's units
        written = write_tables(trained, cfg, out, rows, shown, noisy, recon)
        grid, ncol = None, 0
    else:
        ncol = min(cfg.nrow, len(shown))  # fewer images than a row: a narrower grid keeps originals above
        if noisy is None:
            grid = interleave_rows(shown, recon, ncol)
        else:  # rows of originals, their corrupted versions, and the reconstructions of those
            grid = stack_rows([shown, noisy, recon], ncol)
        grid_path = out.path("reconstructions.png")
        save_picture(grid_picture(grid, ncol, cfg.scale), grid_path)
        written = [grid_path]
        if names:
            folder = out.path("reconstructions")
            folder.mkdir(exist_ok=True)
            for i, (name, image) in enumerate(zip(names, recon, strict=True)):
                save_image(image, folder / f"{i:04d}_{name}.png")
            written.append(folder)
    if cfg.log_to_run and grid is None:
        log.info("log_to_run=true: vectors are not logged as TensorBoard images")
    elif cfg.log_to_run and (tb := run_tensorboard(trained)):
        tag = "reconstruct/input" if cfg.input else f"reconstruct/{cfg.split}"
        tb.image_grid(tag, grid, trained.step, nrow=ncol)
        tb.close()
        log.info("logged %s to %s", tag, trained.run_dir / "tensorboard")
    log.info("reconstructed %d %s from %s", len(x), "vectors" if vectors else "images", source)
    for path in written:
        console.print(f"wrote [bold]{path}[/bold]")
    result = {"checkpoint": str(trained.path), "images": len(x), "files": [str(p) for p in written]}
    if noisy is not None:
        result.update(noise=noise, noise_level=cfg.noise_level, **noise_mse)
    return result


def write_tables(
    trained: Trained,
    cfg: DictConfig,
    out: Output,
    rows: list[str],
    originals: torch.Tensor,
    noisy: torch.Tensor | None,
    recon: torch.Tensor,
) -> list[Path]:
    """originals.csv/.npy and reconstructions.csv/.npy (and noisy.csv/.npy), row for row, in the data's
    units; the CSVs' first column is the example's row in the training file."""
    features = feature_names(trained, originals.shape[-1], cfg.data_dir)
    index = {"example": rows} if len(rows) == len(originals) else {}
    written = []
    # the reconstructions first: they are the main output (`out=<file>.csv` names them)
    parts = [("reconstructions", recon), ("originals", originals), ("noisy", noisy)]
    for name, values in parts:
        if values is not None:
            written += write_vectors(
                out.path(f"{name}.csv"),
                out.path(f"{name}.npy"),
                in_data_units(trained, values),
                features,
                index,
            )
    return written


def stack_rows(parts: list[torch.Tensor], ncol: int) -> torch.Tensor:
    """Rows of `ncol` images taken in turn from each of `parts` (e.g. originals, noisy, reconstructions)."""
    return torch.cat([part[i : i + ncol] for i in range(0, len(parts[0]), ncol) for part in parts])


@torch.no_grad()
def reconstruct_images(model: VAE, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """model.reconstruct (z = mu, shown as E[x|z]) in batches; `labels`: a conditional model's."""
    parts = []
    for i in range(0, len(x), BATCH):
        with conditioned(model, None if labels is None else labels[i : i + BATCH]):
            parts.append(model.reconstruct(x[i : i + BATCH]))
    return torch.cat(parts)
