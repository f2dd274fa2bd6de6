"""`vae reconstruct`: originals above their reconstructions (z = mu), from a split or from your own images.

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

from vae_cli.commands.common import first_images, load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_reconstruct_config
from vae_cli.console import console, interleave_rows
from vae_cli.data import prepare_batch
from vae_cli.data.loaders import corrupt
from vae_cli.data.readers import read_images
from vae_cli.errors import DataError
from vae_cli.models import VAE

log = logging.getLogger("vae")

BATCH = 256


def reconstruct(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_reconstruct_config)
    model = trained.model
    generator = trained.generator(cfg.seed)
    binarize = trained.dataset.binarize

    names: list[str] = []
    if cfg.input:
        path = Path(cfg.input).expanduser()
        if not path.exists():
            raise DataError(f"input={path} does not exist: pass an image file or a folder of images")
        found = read_images(path, model.image_shape, what=f"input={path}")
        images, names = (
            found.images,
            [str(Path(name).with_suffix("")).replace("/", "_") for name in found.names],
        )
        # Binarised training data (static or dynamic) means binary inputs: draw them like dynamic does.
        binarize = "dynamic" if binarize in ("static", "dynamic") else binarize
        source = str(cfg.input)
    else:
        data = load_data(trained, cfg.data_dir)
        images = first_images(pick_split(data, cfg.split), cfg.n)
        source = f"{data.name} {cfg.split}"
    x = prepare_batch(images.to(trained.device), binarize, generator)
    noisy, noise = None, ""
    if cfg.noise_level > 0:  # what a denoising VAE was trained for: corrupted inputs, clean targets
        trained_noise = OmegaConf.select(trained.config, "train.denoise", default="none")
        noise = cfg.noise or (trained_noise if trained_noise in ("gaussian", "mask") else "gaussian")
        noisy = corrupt(x, noise, cfg.noise_level, generator)
    recon = reconstruct_images(model, x if noisy is None else noisy)

    x, recon = x.float().clamp(0, 1).cpu(), recon.float().clamp(0, 1).cpu()
    ncol = min(cfg.nrow, len(x))  # fewer images than a row: a narrower grid keeps originals above
    if noisy is None:
        grid = interleave_rows(x, recon, ncol)
    else:  # rows of originals, their corrupted versions, and the reconstructions of those
        noisy = noisy.float().clamp(0, 1).cpu()
        grid = stack_rows([x, noisy, recon], ncol)
        noise_mse = {
            "noisy_mse": float((noisy - x).pow(2).flatten(1).sum(1).mean()),
            "reconstruction_mse": float((recon - x).pow(2).flatten(1).sum(1).mean()),
        }
        log.info(
            "%s noise at level %g: squared error to the clean images, per image: corrupted %.2f, "
            "reconstructed %.2f",
            noise,
            cfg.noise_level,
            noise_mse["noisy_mse"],
            noise_mse["reconstruction_mse"],
        )
    grid_path = out / "reconstructions.png"
    save_image(grid, grid_path, nrow=ncol, padding=2, pad_value=0.5)
    written = [grid_path]
    if names:
        folder = out / "reconstructions"
        folder.mkdir(exist_ok=True)
        for i, (name, image) in enumerate(zip(names, recon, strict=True)):
            save_image(image, folder / f"{i:04d}_{name}.png")
        written.append(folder)
    if cfg.log_to_run and (tb := run_tensorboard(trained)):
        tag = "reconstruct/input" if cfg.input else f"reconstruct/{cfg.split}"
        tb.image_grid(tag, grid, trained.step, nrow=ncol)
        tb.close()
        log.info("logged %s to %s", tag, trained.run_dir / "tensorboard")
    log.info("reconstructed %d images from %s", len(x), source)
    for path in written:
        console.print(f"wrote [bold]{path}[/bold]")
    result = {"checkpoint": str(trained.path), "images": len(x), "files": [str(p) for p in written]}
    if noisy is not None:
        result.update(noise=noise, noise_level=cfg.noise_level, **noise_mse)
    return result


def stack_rows(parts: list[torch.Tensor], ncol: int) -> torch.Tensor:
    """Rows of `ncol` images taken in turn from each of `parts` (e.g. originals, noisy, reconstructions)."""
    return torch.cat([part[i : i + ncol] for i in range(0, len(parts[0]), ncol) for part in parts])


@torch.no_grad()
def reconstruct_images(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """model.reconstruct (z = mu, shown as E[x|z]) in batches."""
    return torch.cat([model.reconstruct(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
