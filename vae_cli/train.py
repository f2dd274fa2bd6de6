"""`vae train`: set up, loop over epochs (train, validate, log, checkpoint), test the best model.

Read it top to bottom: `train` is the whole story; the helpers below it each do one thing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vae_cli.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from vae_cli.config import TrainConfig, validate_train_config
from vae_cli.data import BatchSource, DataBundle, create_dataset, make_batches, prepare_batch
from vae_cli.data.loaders import corrupt
from vae_cli.distributed import Dist, init_distributed, shutdown
from vae_cli.errors import ConfigError, TrainingStopped, VaeError
from vae_cli.evaluate import representation_metrics
from vae_cli.likelihoods import create_likelihood
from vae_cli.logging import (
    TensorBoard,
    console,
    epoch_progress,
    fmt,
    interleave_rows,
    log_hparams,
    metrics_table,
)
from vae_cli.models import VAE, create_model
from vae_cli.objectives import beta_at, objective_terms
from vae_cli.runtime import (
    GracefulStop,
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
#: evaluation keeps no activations for a backward pass, so it takes this many times the training batch:
#: fewer, fuller passes on a GPU (on a 2-core CPU it is neutral for the MLP, 13% faster for the conv model)
EVAL_BATCH_FACTOR = 4
DIST_TIMEOUT_S = 900  # a rank that dies makes the others fail after this long instead of hanging


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already taken (non-zero only when interrupted)
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # that epoch's sums so far
    best_val: float = math.inf
    best_epoch: int = 0
    skipped: int = 0  # non-finite steps skipped (train.skip_nonfinite)
    metrics: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # the last epoch's train and val metrics


@dataclass
class Run:
    """What every step needs: the config, the model (and how to call it), the optimiser, where to write."""

    cfg: DictConfig
    data: DataBundle
    model: VAE  # the plain module: its state_dict has no `module.`/`_orig_mod.` prefixes
    forward: Any  # the model's forward pass as trained: compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch lr scheduler, or None
    ema: AveragedModel | None  # the moving average of the weights, when train.ema > 0
    scaler: torch.amp.GradScaler
    device: torch.device
    dist: Dist
    tb: TensorBoard
    ckpt_dir: Path
    progress: Progress
    stop: GracefulStop

    @property
    def eval_model(self) -> VAE:
        """The weights that are evaluated, sampled and saved for use: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train a VAE as `cfg` says, writing TensorBoard events, checkpoints and metrics.json into run_dir."""
    validate_train_config(cfg)
    tc = cfg.train
    dist, device = init_distributed(resolve_device(cfg.device), DIST_TIMEOUT_S)
    try:
        seed_everything(cfg.seed + dist.rank)
        check_precision(device, tc.precision)
        configure_backends(device)
        data = create_dataset(cfg.dataset, cfg.data_dir)
        model = create_model(cfg.model, data.shape, cfg.latent_dim, create_likelihood(cfg.loss)).to(device)
        if cfg.model.name in ("conv", "resnet") and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        shard = {"rank": dist.rank, "world_size": dist.world_size}
        batches = {
            split: make_batches(
                getattr(data, split),
                tc.batch_size if split == "train" else eval_batch_size(tc.batch_size),
                split == "train",
                cfg.seed,
                device,
                cfg.dataset.in_memory,
                tc.num_workers,
                **shard,
            )
            for split in ("train", "val")
        }
        optimizer = create_optimizer(model, cfg)
        scheduler = create_scheduler(optimizer, cfg, len(batches["train"]))
        ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
            if tc.ema
            else None
        )
        scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "16-mixed")
        progress = Progress()
        if tc.resume:
            progress = resume_from(
                Path(tc.resume), cfg, model, optimizer, scheduler, ema, scaler, run_dir, dist
            )
        wrapped = (
            DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            if dist.enabled
            else model
        )
        with GracefulStop() as stop:
            run = Run(
                cfg,
                data,
                model,
                maybe_compile(wrapped, tc.compile),
                optimizer,
                scheduler,
                ema,
                scaler,
                device,
                dist,
                TensorBoard(run_dir / "tensorboard", enabled=dist.is_main),
                run_dir / "checkpoints",
                progress,
                stop,
            )
            metrics = fit(run, batches["train"], batches["val"], run_dir)
        dist.barrier()  # every rank leaves together: no process group torn down while rank 0 still tests
        return metrics
    except torch.cuda.OutOfMemoryError:
        raise VaeError(
            f"CUDA out of memory at train.batch_size={tc.batch_size}: use a smaller one, "
            f"e.g. train.batch_size={max(1, tc.batch_size // 2)}"
        ) from None
    finally:
        shutdown()


def fit(run: Run, train_batches: BatchSource, val_batches: BatchSource, run_dir: Path) -> dict[str, Any]:
    cfg, tc, data, progress = run.cfg, run.cfg.train, run.data, run.progress
    warmup_steps = round(tc.kl_warmup_epochs * len(train_batches))
    log.info(
        "training %s on %s (%d train / %d val examples, %s) on %s%s; %s parameters",
        cfg.model.name,
        data.name,
        len(data.train),
        len(data.val),
        "x".join(map(str, data.shape)),
        run.device,
        f" x {run.dist.world_size} processes" if run.dist.enabled else "",
        f"{sum(p.numel() for p in run.model.parameters()):,}",
    )

    started = time.perf_counter()
    train_metrics: dict[str, float] = progress.metrics.get("train", {})
    val_metrics: dict[str, float] = progress.metrics.get("val", {})
    for epoch in range(progress.epoch, tc.epochs):
        train_batches.set_epoch(epoch, progress.batch_in_epoch)
        epoch_start = time.perf_counter()
        epoch_metrics = train_epoch(run, train_batches, warmup_steps)
        if epoch_metrics is None:  # stopped mid-epoch by a signal (every process agreed on the step)
            raise interrupted(run, {})
        train_metrics = epoch_metrics
        train_metrics["examples_per_sec"] = len(data.train) / (time.perf_counter() - epoch_start)
        val_metrics = evaluate_batches(run.eval_model, val_batches, data, cfg, run.device, run.dist)
        progress.epoch = epoch + 1
        if tc.scheduler == "plateau":
            run.scheduler.step(val_metrics["loss"])

        run.tb.scalars("train", {"examples_per_sec": train_metrics["examples_per_sec"]}, progress.step)
        run.tb.scalars("val", val_metrics, progress.step)
        if (
            run.dist.is_main
            and tc.image_every
            and (progress.epoch % tc.image_every == 0 or progress.epoch == tc.epochs)
        ):
            log_images(run.tb, run.eval_model, val_batches, data, cfg.seed, progress.step)
        is_best = val_metrics["loss"] < progress.best_val
        if is_best:
            progress.best_val, progress.best_epoch = val_metrics["loss"], progress.epoch
        if run.dist.is_main:
            payload = checkpoint_payload(run, train_metrics, val_metrics)
            save_checkpoint(run.ckpt_dir / "last.ckpt", payload)
            if is_best:
                save_checkpoint(run.ckpt_dir / "best.ckpt", payload)
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
        if tc.early_stop_patience and progress.epoch - progress.best_epoch >= tc.early_stop_patience:
            log.info("early stop: no better val loss for %d epochs", tc.early_stop_patience)
            break

    if run.dist.any(bool(run.stop.requested), run.device):  # a signal after the last step of the last epoch
        raise interrupted(run, train_metrics)
    run.dist.barrier()
    if not run.dist.is_main:
        return {}
    # The reported test numbers are the best (by validation loss) model's, on all of the test split.
    model = run.eval_model
    best = run.ckpt_dir / "best.ckpt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best, run.device)["model"])
    test_batches = make_batches(
        data.test,
        eval_batch_size(tc.batch_size),
        False,
        cfg.seed,
        run.device,
        cfg.dataset.in_memory,
        tc.num_workers,
    )
    test_metrics = evaluate_batches(model, test_batches, data, cfg, run.device)
    test_metrics.update(representation_metrics(model, data.test, data.binarize, run.device, cfg.seed))
    run.tb.scalars("test", test_metrics, progress.step)
    log_hparams(run.tb, cfg, {"val": val_metrics, "test": test_metrics})
    run.tb.close()

    metrics = {
        "train": train_metrics,
        "val": val_metrics,
        "test": test_metrics,
        "best_epoch": progress.best_epoch,
        "best_val_loss": progress.best_val,
        "epochs": progress.epoch,
        "steps": progress.step,
        "skipped_steps": progress.skipped,
        "world_size": run.dist.world_size,
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


def train_epoch(run: Run, batches: BatchSource, warmup_steps: int) -> dict[str, float] | None:
    """One pass over the training data (or what is left of it after a mid-epoch resume); None when a
    signal stopped it part-way.

    Sums stay on the device and are read once per `log_every` steps: no host sync per step, unless
    `train.skip_nonfinite` asks to inspect every step. Several processes agree to stop (a signal to one
    of them) at those same interval steps, inside the one all-reduce."""
    cfg, progress, device = run.cfg, run.progress, run.device
    tc: TrainConfig = OmegaConf.to_object(cfg.train)  # plain attributes: OmegaConf lookups cost ~10 us each
    objective, k, final_beta = cfg.objective.name, cfg.objective.k, cfg.beta
    binarize, unit_range = run.data.binarize, run.data.unit_range
    run.model.train()
    sums = torch.tensor(progress.partial, device=device)  # loss, recon, kl (summed over examples), count
    window, window_seen = torch.zeros(3, device=device), 0
    first_bad_step = torch.tensor(-1.0, device=device)  # the first non-finite step, recorded without a sync
    with epoch_progress(enabled=run.dist.is_main) as bar:
        task = bar.add_task(
            "train",
            total=len(batches),
            completed=progress.batch_in_epoch,
            epoch=progress.epoch + 1,
            loss="...",
        )
        for images in batches:
            x = prepare_batch(images, binarize)
            inputs = corrupt(x, tc.denoise, tc.noise_level, clamp=unit_range)  # denoising: clean target
            beta = beta_at(progress.step, final_beta, warmup_steps)
            with autocast(device, tc.precision):
                terms = objective_terms(objective, run.model, inputs, k, beta, target=x, forward=run.forward)
                loss = terms.loss(beta, tc.free_bits)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            finite = torch.isfinite(loss)
            if tc.grad_clip > 0 or tc.skip_nonfinite:
                run.scaler.unscale_(run.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.grad_clip or math.inf)
                if not run.scaler.is_enabled():  # with fp16, the scaler itself skips overflowing steps
                    finite = finite & torch.isfinite(grad_norm)
            progress.batch_in_epoch += 1
            bar.advance(task)
            if tc.skip_nonfinite and not run.dist.all(bool(finite), device):  # a per-step sync, only here
                skip_nonfinite_step(run, float(loss.detach()))
                continue
            first_bad_step = torch.where((first_bad_step < 0) & ~finite, progress.step + 1.0, first_bad_step)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            if run.ema is not None:
                run.ema.update_parameters(run.model)
            if tc.scheduler == "cosine":
                run.scheduler.step()
            progress.step += 1

            # sums over the batch's examples: loss, recon and KL are per-example means
            window.add_(torch.stack([loss, terms.recon.mean(), terms.kl.mean()]).detach(), alpha=len(x))
            window_seen += len(x)
            at_interval = progress.step % tc.log_every == 0 or progress.batch_in_epoch == len(batches)
            stop_here = bool(run.stop.requested) and not run.dist.enabled  # one process stops at once
            if not (at_interval or stop_here):
                continue
            # One host sync per interval; with several processes, the numbers (and stop requests) are everyone's.
            flags = [float(window_seen), float(bool(run.stop.requested))]
            totals = run.dist.sum(
                torch.cat([window, torch.tensor(flags, device=device), (first_bad_step >= 0)[None]])
            )
            loss_w, recon_w, kl_w, seen, stops, bad = totals.tolist()
            loss_w, recon_w, kl_w = (value / max(seen, 1) for value in (loss_w, recon_w, kl_w))
            if bad > 0:
                step = int(first_bad_step) if first_bad_step >= 0 else progress.step
                raise nonfinite_error(loss_w, progress.epoch, step, run.ckpt_dir)
            run.tb.scalars(
                "train",
                {
                    "loss": loss_w,
                    "recon": recon_w,
                    "kl": kl_w,
                    "beta": beta,
                    "lr": run.optimizer.param_groups[0]["lr"],
                },
                progress.step,
            )
            bar.update(task, loss=fmt(loss_w))
            sums += totals[:4]
            window.zero_()
            window_seen = 0
            if stops > 0:
                run.stop.requested = run.stop.requested or "a signal to another process"
                progress.partial = sums.tolist()
                return None
    progress.batch_in_epoch, progress.partial = 0, [0.0, 0.0, 0.0, 0.0]
    loss_sum, recon_sum, kl_sum = (sums[:3] / sums[3].clamp(min=1)).tolist()
    return {"loss": loss_sum, "recon": recon_sum, "kl": kl_sum, "neg_elbo": recon_sum + kl_sum}


def skip_nonfinite_step(run: Run, loss: float) -> None:
    progress, allowed = run.progress, run.cfg.train.skip_nonfinite
    progress.skipped += 1
    log.warning(
        "skipped step %d of epoch %d: non-finite loss or gradient (%d of %d allowed)",
        progress.step + 1,
        progress.epoch + 1,
        progress.skipped,
        allowed,
    )
    if progress.skipped > allowed:
        raise nonfinite_error(
            loss, progress.epoch, progress.step + 1, run.ckpt_dir, f"more than {allowed} skipped steps"
        )


def nonfinite_error(loss: float, epoch: int, step: int, ckpt_dir: Path, why: str = "") -> TrainingStopped:
    last = ckpt_dir / "last.ckpt"
    kept = (
        f"the last good checkpoint, {last.resolve()}, is kept"
        if last.is_file()
        else "no checkpoint was written yet"
    )
    return TrainingStopped(
        f"non-finite training loss ({loss}) at epoch {epoch + 1}, step {step}{' (' + why + ')' if why else ''}; "
        f"likely causes: a too high train.lr (lower it or set train.grad_clip), reduced precision (use "
        f"train.precision=32), or a collapsing Gaussian variance (raise loss.min_sigma); {kept}"
    )


def interrupted(run: Run, train_metrics: dict[str, float]) -> TrainingStopped:
    """Write a resumable checkpoint (mid-epoch: it records how far the epoch got) and say how to go on."""
    path = run.ckpt_dir / "last.ckpt"
    where = f"epoch {run.progress.epoch + 1}, step {run.progress.step}"
    if not run.dist.is_main:
        return TrainingStopped(
            f"{run.stop.requested}: rank {run.dist.rank} stopped at {where}; rank 0 writes the checkpoint",
            130,
        )
    save_checkpoint(path, checkpoint_payload(run, train_metrics, {}))
    return TrainingStopped(
        f"{run.stop.requested}: stopped at {where}; checkpoint "
        f"written; continue with: vae train train.resume={path.resolve()} (and the same overrides)",
        130,
    )


@torch.no_grad()
def evaluate_batches(
    model: VAE,
    batches: BatchSource,
    data: DataBundle,
    cfg: DictConfig,
    device: torch.device,
    dist: Dist | None = None,
) -> dict[str, float]:
    """Average loss (the training objective, with the configured beta), recon, KL and negative ELBO
    (nats per example) over a split, with z ~ q(z|x).

    A generator seeded the same way every time draws the noise, so the number moves only when the
    model does, and evaluation leaves the training RNG untouched. With several processes, each
    evaluates its shard and the sums are all-reduced."""
    tc = cfg.train
    model.eval()
    generator = torch.Generator(device=device).manual_seed(cfg.seed + (dist.rank if dist else 0))
    sums, n = torch.zeros(3, dtype=torch.float64, device=device), 0
    for images in batches:
        x = prepare_batch(images, data.binarize, generator)
        inputs = corrupt(x, tc.denoise, tc.noise_level, generator, clamp=data.unit_range)
        with autocast(device, tc.precision):
            terms = objective_terms(
                cfg.objective.name, model, inputs, cfg.objective.k, cfg.beta, target=x, generator=generator
            )
            loss = terms.loss(cfg.beta, tc.free_bits)
        sums += torch.stack([loss * len(x), terms.recon.sum(), terms.kl.sum()]).double()
        n += len(x)
    totals = torch.cat([sums, torch.tensor([float(n)], dtype=torch.float64, device=device)])
    if dist is not None:
        dist.sum(totals)
    model.train()
    loss, recon, kl = (totals[:3] / totals[3].clamp(min=1)).tolist()
    return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": recon + kl}


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


def eval_batch_size(train_batch_size: int) -> int:
    return EVAL_BATCH_FACTOR * train_batch_size


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def create_optimizer(model: VAE, cfg: DictConfig) -> torch.optim.Optimizer:
    """Adam or AdamW with the fused kernel (one pass over all parameters instead of ~8 ops per tensor:
    on CPU ~15% of an MLP epoch) where the device has one, else torch's default implementation."""
    tc, params = cfg.train, list(model.parameters())
    optimizer = OPTIMIZERS[tc.optimizer]
    try:
        return optimizer(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=True)
    except RuntimeError:  # "`fused=True` requires all the params to be ... of supported devices"
        return optimizer(params, lr=tc.lr, weight_decay=tc.weight_decay)


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int) -> Any:
    """cosine: anneal per step from lr to min_lr over the whole run; plateau: multiply lr by
    plateau_factor when the val loss has not improved for plateau_patience epochs."""
    tc = cfg.train
    if tc.scheduler == "cosine":
        total = max(1, tc.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=tc.min_lr)
    if tc.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=tc.plateau_factor, patience=tc.plateau_patience, min_lr=tc.min_lr
        )
    return None


def checkpoint_payload(
    run: Run, train_metrics: dict[str, float], val_metrics: dict[str, float]
) -> dict[str, Any]:
    p = run.progress
    return {
        "config": OmegaConf.to_container(run.cfg, resolve=True),
        "model": run.eval_model.state_dict(),  # what sample/evaluate use: the EMA weights when there are some
        "train_model": run.model.state_dict(),  # the weights the optimiser steps, for resuming
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(),
        "epoch": p.epoch,
        "step": p.step,
        "batch_in_epoch": p.batch_in_epoch,
        "partial": p.partial,
        "skipped": p.skipped,
        "best_val": p.best_val,
        "best_epoch": p.best_epoch,
        "world_size": run.dist.world_size,
        "rng": rng_states(),
        "metrics": {"train": train_metrics, "val": val_metrics},
        "image_shape": list(run.model.image_shape),
        "data_stats": run.data.stats,
    }


def resume_from(
    path: Path,
    cfg: DictConfig,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: AveragedModel | None,
    scaler: torch.amp.GradScaler,
    run_dir: Path,
    dist: Dist,
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
    if ckpt["epoch"] > cfg.train.epochs:
        raise ConfigError(
            f"{path} has already trained {ckpt['epoch']} epochs, more than train.epochs="
            f"{cfg.train.epochs}: raise train.epochs to continue"
        )
    if ckpt["epoch"] == cfg.train.epochs:
        # Killed after its last epoch, before the end: resuming only tests the best checkpoint.
        log.info("%s has trained all %d epochs: testing the best checkpoint", path, ckpt["epoch"])
    model.load_state_dict(ckpt.get("train_model") or ckpt["model"])
    optimizer.load_state_dict(with_kernels_of(optimizer, ckpt["optimizer"]))
    if scheduler is not None and ckpt.get("scheduler"):
        total_steps = getattr(scheduler, "T_max", None)
        scheduler.load_state_dict(ckpt["scheduler"])
        if total_steps is not None:
            scheduler.T_max = total_steps  # cosine: anneal over this run's train.epochs, which may have grown
    if ema is not None:
        ema.load_state_dict(ckpt["ema"]) if ckpt.get("ema") else ema.module.load_state_dict(ckpt["model"])
    saved_train = saved.get("train", {})
    if (saved_train.get("lr"), saved_train.get("weight_decay")) != (cfg.train.lr, cfg.train.weight_decay):
        for group in (
            optimizer.param_groups
        ):  # a new lr or weight decay on the command line wins (e.g. after divergence)
            group["lr"], group["weight_decay"] = cfg.train.lr, cfg.train.weight_decay
    scaler.load_state_dict(ckpt["scaler"])
    progress = Progress(
        ckpt["epoch"],
        ckpt["step"],
        ckpt["batch_in_epoch"],
        list(ckpt["partial"]),
        ckpt["best_val"],
        ckpt["best_epoch"],
        ckpt["skipped"],
        dict(ckpt.get("metrics") or {}),
    )
    if ckpt.get("world_size", 1) == dist.world_size == 1:
        restore_rng_states(ckpt["rng"])  # the exact continuation of a single-process run
    else:
        seed_everything(cfg.seed + 1000 * dist.rank + progress.step)  # a fresh, distinct stream per rank
        if progress.batch_in_epoch and ckpt.get("world_size", 1) != dist.world_size:
            # The epoch's order is global: convert the batches taken to this world size's batches.
            taken = progress.batch_in_epoch * cfg.train.batch_size * ckpt.get("world_size", 1)
            progress.batch_in_epoch = taken // (cfg.train.batch_size * dist.world_size)
    best = path.parent / "best.ckpt"
    if (
        dist.is_main
        and best.is_file()
        and best.resolve() != (run_dir / "checkpoints" / "best.ckpt").resolve()
    ):
        copy_checkpoint(best, run_dir / "checkpoints" / "best.ckpt")
    elif not best.is_file():
        progress.best_val = math.inf  # the best weights are gone: pick the best afresh
    log.info(
        "resumed from %s at epoch %d, step %d",
        path,
        progress.epoch + (progress.batch_in_epoch > 0),
        progress.step,
    )
    return progress


def with_kernels_of(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A saved optimizer state that keeps this machine's implementation (fused or not): the saver's may
    not exist here (a CUDA run resumed on a CPU), and load_state_dict places the state by it."""
    groups = [
        {**saved, "fused": group.get("fused"), "foreach": group.get("foreach")}
        for saved, group in zip(state["param_groups"], optimizer.param_groups, strict=False)
    ]
    return {**state, "param_groups": groups}


def _core(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("loss", "recon", "kl", "neg_elbo") if k in metrics}
