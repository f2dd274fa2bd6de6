"""`vae train`: set up, loop over epochs (train, validate, log, checkpoint), test the best model.

Read it top to bottom: `train` is the whole story; the helpers below it each do one thing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vae_cli.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from vae_cli.config import validate_train_config
from vae_cli.data import BatchSource, DataBundle, create_dataset, make_batches, prepare_batch
from vae_cli.errors import ConfigError, VaeError
from vae_cli.likelihoods import create_likelihood
from vae_cli.logging import TensorBoard, console, epoch_progress, fmt, interleave_rows, metrics_table
from vae_cli.models import VAE, create_model
from vae_cli.objectives import beta_at, elbo_terms
from vae_cli.runtime import (
    autocast,
    check_precision,
    configure_backends,
    maybe_compile,
    resolve_device,
    seed_everything,
)

log = logging.getLogger("vae")

#: Config sections that define the model; a resumed run must keep them.
MODEL_DEFINING_KEYS = ("dataset", "model", "loss", "latent_dim")
NUM_IMAGES = 64


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps taken
    best_val: float = math.inf
    best_epoch: int = 0


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train a VAE as `cfg` says, writing TensorBoard events, checkpoints and metrics.json into run_dir."""
    validate_train_config(cfg)
    tc = cfg.train
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    check_precision(device, tc.precision)
    configure_backends(device)

    data = create_dataset(cfg.dataset, cfg.data_dir)
    model = create_model(cfg.model, data.shape, cfg.latent_dim, create_likelihood(cfg.loss)).to(device)
    if cfg.model.name == "conv" and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "16-mixed")
    progress = Progress()
    if tc.resume:
        progress = resume_from(Path(tc.resume), cfg, model, optimizer, scaler, run_dir)
    forward = maybe_compile(model, tc.compile)

    train_batches = make_batches(
        data.train, tc.batch_size, True, cfg.seed, device, cfg.dataset.in_memory, tc.num_workers
    )
    val_batches = make_batches(
        data.val, tc.batch_size, False, cfg.seed, device, cfg.dataset.in_memory, tc.num_workers
    )
    warmup_steps = round(tc.kl_warmup_epochs * len(train_batches))
    tb = TensorBoard(run_dir / "tensorboard")
    ckpt_dir = run_dir / "checkpoints"
    log.info(
        "training %s on %s (%d train / %d val examples, %s) on %s; %s parameters",
        cfg.model.name,
        data.name,
        len(data.train),
        len(data.val),
        "x".join(map(str, data.shape)),
        device,
        f"{sum(p.numel() for p in model.parameters()):,}",
    )

    started = time.perf_counter()
    train_metrics: dict[str, float] = {}
    val_metrics: dict[str, float] = {}
    for epoch in range(progress.epoch, tc.epochs):
        train_batches.set_epoch(epoch)
        epoch_start = time.perf_counter()
        train_metrics = train_epoch(
            forward, model, optimizer, scaler, train_batches, data, cfg, progress, warmup_steps, tb, device
        )
        train_metrics["examples_per_sec"] = len(data.train) / (time.perf_counter() - epoch_start)
        val_metrics = evaluate_batches(
            model, val_batches, data.binarize, cfg.beta, cfg.seed, device, tc.precision
        )
        progress.epoch = epoch + 1

        tb.scalars("train", {"examples_per_sec": train_metrics["examples_per_sec"]}, progress.step)
        tb.scalars("val", val_metrics, progress.step)
        if tc.image_every and (progress.epoch % tc.image_every == 0 or progress.epoch == tc.epochs):
            log_images(tb, model, val_batches, data, cfg.seed, progress.step)
        is_best = val_metrics["loss"] < progress.best_val
        if is_best:
            progress.best_val, progress.best_epoch = val_metrics["loss"], progress.epoch
        payload = checkpoint_payload(cfg, model, optimizer, scaler, progress, train_metrics, val_metrics)
        save_checkpoint(ckpt_dir / "last.ckpt", payload)
        if is_best:
            save_checkpoint(ckpt_dir / "best.ckpt", payload)
        log.info(
            "epoch %d/%d  train loss %s  val loss %s (recon %s, KL %s)%s  %.0f ex/s",
            progress.epoch,
            tc.epochs,
            fmt(train_metrics["loss"]),
            fmt(val_metrics["loss"]),
            fmt(val_metrics["recon"]),
            fmt(val_metrics["kl"]),
            "  *best*" if is_best else "",
            train_metrics["examples_per_sec"],
        )

    # The reported test numbers are the best (by validation loss) model's.
    best = ckpt_dir / "best.ckpt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best, device)["model"])
    test_batches = make_batches(
        data.test, tc.batch_size, False, cfg.seed, device, cfg.dataset.in_memory, tc.num_workers
    )
    test_metrics = evaluate_batches(
        model, test_batches, data.binarize, cfg.beta, cfg.seed, device, tc.precision
    )
    tb.scalars("test", test_metrics, progress.step)
    tb.close()

    metrics = {
        "train": train_metrics,
        "val": val_metrics,
        "test": test_metrics,
        "best_epoch": progress.best_epoch,
        "best_val_loss": progress.best_val,
        "epochs": progress.epoch,
        "steps": progress.step,
        "wall_time_s": time.perf_counter() - started,
        "units": "nats per example",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    console.print(
        metrics_table(
            f"{cfg.model.name} on {data.name}: nats per example",
            {
                "train (last epoch)": _core(train_metrics),
                "val (last epoch)": _core(val_metrics),
                f"test (best, epoch {progress.best_epoch})": _core(test_metrics),
            },
        )
    )
    console.print(f"outputs in [bold]{run_dir}[/bold]  (tensorboard --logdir {run_dir / 'tensorboard'})")
    return metrics


def train_epoch(
    forward: Any,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: BatchSource,
    data: DataBundle,
    cfg: DictConfig,
    progress: Progress,
    warmup_steps: int,
    tb: TensorBoard,
    device: torch.device,
) -> dict[str, float]:
    """One pass over the training data. Sums stay on the device; they are read once per `log_every` steps."""
    tc = cfg.train
    model.train()
    sums = torch.zeros(3, device=device)  # loss, recon, kl, each summed over examples
    window = torch.zeros(3, device=device)
    seen = window_seen = 0
    with epoch_progress() as bar:
        task = bar.add_task("train", total=len(batches), epoch=progress.epoch + 1, loss="...")
        for images in batches:
            x = prepare_batch(images, data.binarize)
            beta = beta_at(progress.step, cfg.beta, warmup_steps)
            with autocast(device, tc.precision):
                terms = elbo_terms(forward, x)
                loss = terms.loss(beta)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            progress.step += 1

            batch = torch.stack([loss.detach() * len(x), terms.recon.detach().sum(), terms.kl.detach().sum()])
            window += batch
            window_seen += len(x)
            bar.advance(task)
            if progress.step % tc.log_every == 0 or window_seen + seen == batches.num_examples:
                loss_w, recon_w, kl_w = (window / window_seen).tolist()  # the one host sync per interval
                if not math.isfinite(loss_w):
                    raise VaeError(
                        f"the training loss became {loss_w} at epoch {progress.epoch + 1}, step {progress.step}: "
                        f"lower train.lr, set train.grad_clip, use train.precision=32, or raise loss.min_sigma"
                    )
                tb.scalars(
                    "train",
                    {
                        "loss": loss_w,
                        "recon": recon_w,
                        "kl": kl_w,
                        "beta": beta,
                        "lr": optimizer.param_groups[0]["lr"],
                    },
                    progress.step,
                )
                bar.update(task, loss=fmt(loss_w))
                sums += window
                seen += window_seen
                window.zero_()
                window_seen = 0
    loss_sum, recon_sum, kl_sum = (sums / max(seen, 1)).tolist()
    return {"loss": loss_sum, "recon": recon_sum, "kl": kl_sum, "neg_elbo": recon_sum + kl_sum}


@torch.no_grad()
def evaluate_batches(
    model: VAE,
    batches: BatchSource,
    binarize: str,
    beta: float,
    seed: int,
    device: torch.device,
    precision: str = "32",
) -> dict[str, float]:
    """Average loss, recon, KL and negative ELBO (nats per example) over a split, with z ~ q(z|x).

    A generator seeded the same way every time draws the noise, so the number moves only when the
    model does, and evaluation leaves the training RNG untouched."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    n = 0
    for images in batches:
        x = prepare_batch(images, binarize, generator)
        with autocast(device, precision):
            terms = elbo_terms(model, x, generator=generator)
        sums += torch.stack([terms.recon.sum(), terms.kl.sum()]).double()
        n += len(x)
    model.train()
    recon, kl = (sums / max(n, 1)).tolist()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "neg_elbo": recon + kl}


@torch.no_grad()
def log_images(
    tb: TensorBoard, model: VAE, val_batches: BatchSource, data: DataBundle, seed: int, step: int
) -> None:
    """Validation reconstructions (originals above reconstructions, z = mu) and prior samples."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    images = next(iter(val_batches))[:32]
    x = prepare_batch(images, data.binarize, generator)
    tb.image_grid("val/reconstructions", interleave_rows(x, model.reconstruct(x), 8), step)
    tb.image_grid("samples/prior", model.sample(NUM_IMAGES, generator=generator), step)
    model.train()


def create_optimizer(model: VAE, cfg: DictConfig) -> torch.optim.Optimizer:
    tc = cfg.train
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return optimizers[tc.optimizer](model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


def checkpoint_payload(
    cfg: DictConfig,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    train_metrics: dict[str, float],
    val_metrics: dict[str, float],
) -> dict[str, Any]:
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "best_val": progress.best_val,
        "best_epoch": progress.best_epoch,
        "rng": rng_states(),
        "metrics": {"train": train_metrics, "val": val_metrics},
        "image_shape": list(model.image_shape),
    }


def resume_from(
    path: Path,
    cfg: DictConfig,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    run_dir: Path,
) -> Progress:
    """Restore model, optimiser, counters and RNG states; carry the old run's best.ckpt over."""
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    current = OmegaConf.to_container(cfg, resolve=True)
    changed = [k for k in MODEL_DEFINING_KEYS if saved.get(k) != current.get(k)]
    if changed:
        raise ConfigError(
            f"train.resume={path} was trained with different {', '.join(changed)}: "
            f"use the same settings as that run (see its .hydra/config.yaml)"
        )
    if ckpt["epoch"] >= cfg.train.epochs:
        raise ConfigError(
            f"{path} has already trained {ckpt['epoch']} epochs: raise train.epochs to continue"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    restore_rng_states(ckpt["rng"])
    progress = Progress(ckpt["epoch"], ckpt["step"], ckpt["best_val"], ckpt["best_epoch"])
    best = path.parent / "best.ckpt"
    if best.is_file() and best.resolve() != (run_dir / "checkpoints" / "best.ckpt").resolve():
        copy_checkpoint(best, run_dir / "checkpoints" / "best.ckpt")
    elif not best.is_file():
        progress.best_val = math.inf  # the best weights are gone: pick the best afresh
    log.info("resumed from %s at epoch %d, step %d", path, progress.epoch, progress.step)
    return progress


def _core(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("loss", "recon", "kl", "neg_elbo") if k in metrics}
