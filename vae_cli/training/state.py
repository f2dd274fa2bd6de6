"""The state of a training run: its progress counters, what a checkpoint holds, and resuming from one."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import AveragedModel

from vae_cli.checkpoint import copy_checkpoint, load_checkpoint, restore_rng_states, rng_states
from vae_cli.config import OPTIONS
from vae_cli.config.legacy import upgrade_config
from vae_cli.errors import ConfigError
from vae_cli.models import VAE
from vae_cli.models.conditional import classes_of
from vae_cli.training.distributed import Dist
from vae_cli.training.optim import with_kernels_of
from vae_cli.training.runtime import seed_everything

if TYPE_CHECKING:
    from vae_cli.training.loop import Run

log = logging.getLogger("vae")

#: Config sections that define the model; a resumed run must keep them.
MODEL_DEFINING_KEYS = ("dataset", "model", "prior", "posterior", "loss", "latent_dim")


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
    stage: int = 1  # 2: model=vqvae's code prior is being fitted (vae_cli/training/code_prior_stage.py)
    code_prior: dict[str, Any] | None = None  # stage two's state: its counters, weights and optimiser


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
        # the objective's own model and its optimiser (FactorVAE's discriminator), for an exact resume
        "companion": run.companion.state_dict() if run.companion is not None else None,
        "epoch": p.epoch,
        "step": p.step,
        "stage": p.stage,
        "code_prior": p.code_prior,
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
        "feature_names": run.data.feature_names,
        # model.conditional: the one-hot's classes, from which load_model rebuilds the model (else None)
        "classes": classes.payload() if (classes := classes_of(run.model)) is not None else None,
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
    companion: Any = None,
) -> Progress:
    """Restore model, optimiser, counters and RNG states (and the objective's `companion`, FactorVAE's
    discriminator, when it has one); carry the old run's best.ckpt over."""
    ckpt = load_checkpoint(path)
    saved = upgrade_config(ckpt["config"])  # a checkpoint from before per-option schemas: their keys
    current = OmegaConf.to_container(cfg, resolve=True)
    changed = [k for k in MODEL_DEFINING_KEYS if defining(saved, k) != defining(current, k)]
    if changed:
        raise ConfigError(
            f"train.resume={path} was trained with different {', '.join(changed)}: "
            f"use the same settings as that run (see its .hydra/config.yaml)"
        )
    if ckpt.get("stage", 1) > 1 and ckpt["epoch"] != cfg.train.epochs:
        raise ConfigError(
            f"{path} finished its {ckpt['epoch']} epochs and was fitting model=vqvae's code prior to their "
            f"codes: train.epochs={cfg.train.epochs} would change the codes under it; keep train.epochs="
            f"{ckpt['epoch']} (a new run trains longer)"
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
    if companion is not None:
        restore_companion(companion, ckpt.get("companion"), path, cfg.objective.name)
    progress = Progress(
        ckpt["epoch"],
        ckpt["step"],
        ckpt["batch_in_epoch"],
        list(ckpt["partial"]),
        ckpt["best_val"],
        ckpt["best_epoch"],
        ckpt["skipped"],
        dict(ckpt.get("metrics") or {}),
        ckpt.get("stage", 1),
        ckpt.get("code_prior"),
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


def defining(config: dict[str, Any], key: str) -> Any:
    """The part of config[key] that defines the model: a model section without the keys its schema marks
    as training-only (`training_keys`: model=vqvae's prior_epochs and prior_lr may change on resume)."""
    section = config.get(key)
    if key != "model" or not isinstance(section, dict):
        return section
    schema = OPTIONS["model"].get(section.get("name"))
    return {k: v for k, v in section.items() if k not in getattr(schema, "training_keys", ())}


def restore_companion(companion: Any, state: dict[str, Any] | None, path: Path, objective: str) -> None:
    """The objective's own model (FactorVAE's discriminator) as `path` saved it; afresh when it saved
    none (a run of another objective); one line when it does not fit (other objective.* sizes)."""
    if not state:
        log.info("%s has no state for objective=%s's own model: it starts afresh", path, objective)
        return
    try:
        companion.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"train.resume={path}: objective={objective}'s own model there does not fit this one ({first[:200]}): "
            f"use the same objective settings as that run (see its .hydra/config.yaml)"
        ) from None
