"""`vae train`: set up, loop over epochs (train, validate, log, checkpoint), test the best model.

Read it top to bottom: `train` sets up and `fit` is the whole story; `train_epoch` is one pass over the
data and `train_step` one optimisation step; the run's state and checkpoints are in state.py, the
running sums in meter.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vae_cli.checkpoint import load_checkpoint, save_checkpoint
from vae_cli.config import TrainConfig, validate_train_config
from vae_cli.config.auto import before_data, resolve_auto
from vae_cli.console import (
    StepLog,
    console,
    duration,
    epoch_progress,
    fmt,
    interleave_rows,
    log_to_files,
    metrics_table,
)
from vae_cli.data import BatchSource, DataBundle, create_dataset, make_batches, prepare_batch
from vae_cli.data.base import check_loss_range
from vae_cli.data.loaders import LabelledBatches, PerturbedBatches, corrupt, split_batch
from vae_cli.errors import ConfigError, Interrupted, TrainingStopped, VaeError
from vae_cli.estimators import encode_split
from vae_cli.io import write_json
from vae_cli.likelihoods import create_likelihood
from vae_cli.metrics import representation_metrics
from vae_cli.models import VAE, create_model
from vae_cli.models.conditional import conditioned, data_classes, with_labels
from vae_cli.models.vqvae import is_vqvae
from vae_cli.objectives import OBJECTIVES, Terms, beta_at, draws_no_codes
from vae_cli.paths import background_dir
from vae_cli.pictures import shown_and_input
from vae_cli.tensorboard import TensorBoard, log_hparams
from vae_cli.training.code_prior_stage import fit_code_prior
from vae_cli.training.distributed import Dist, init_distributed, shutdown
from vae_cli.training.meter import Interval, IntervalMeter
from vae_cli.training.optim import create_optimizer, create_scheduler
from vae_cli.training.runtime import (
    GracefulStop,
    autocast,
    check_precision,
    configure_backends,
    maybe_compile,
    resolve_device,
    seed_everything,
)
from vae_cli.training.state import Progress, checkpoint_payload, resume_from

log = logging.getLogger("vae")

NUM_IMAGES = 64
#: evaluation keeps no activations for a backward pass, so it takes this many times the training batch:
#: fewer, fuller passes on a GPU (on a 2-core CPU it is neutral for the MLP, 13% faster for the conv model)
EVAL_BATCH_FACTOR = 4
DIST_TIMEOUT_S = 900  # a rank that dies makes the others fail after this long instead of hanging


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
    epoch_seconds: list[float] = field(default_factory=list)  # this process's training passes, timed
    epoch_walls: list[float] = field(default_factory=list)  # whole epochs (with validation), for the ETA
    before_epoch: Callable[[], None] | None = None
    #: the checkpoint `train.resume` names to continue after an interrupt; None: this run's last.ckpt
    #: (the background model's run says the main run's, which then resumes the background too)
    resume_path: Path | None = None
    #: the automatic defaults this run resolved (vae_cli/config/auto.py), for metrics.json
    automatic: dict[str, Any] = field(default_factory=dict)
    #: the objective's own model trained beside the VAE (FactorVAE's discriminator), else None
    companion: Any = None

    @property
    def eval_model(self) -> VAE:
        """The weights that are evaluated, sampled and saved for use: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def train(cfg: DictConfig, run_dir: Path, before_epoch: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train a VAE as `cfg` says, writing TensorBoard events, checkpoints and metrics.json into run_dir.

    `before_epoch`, when given, runs before each epoch's training pass, outside its timing (metrics.json's
    `epoch_train_seconds`): the benchmark interleaves its other loops there."""
    validate_train_config(cfg)
    tc = cfg.train
    dist, device = init_distributed(resolve_device(cfg.device), DIST_TIMEOUT_S)
    try:
        seed_everything(cfg.seed + dist.rank)
        check_precision(device, tc.precision)
        configure_backends(device)
        data = create_dataset(before_data(cfg).dataset, cfg.data_dir)
        automatic = resolve_auto(cfg, data)  # the automatic defaults (images' or tables'), into cfg
        check_loss_range(data, cfg.loss.name)
        if tc.background:
            check_background_data(data)
        run, train_batches, val_batches = build_run(cfg, data, device, dist, run_dir, before_epoch)
        run.automatic = automatic
        with run.stop:
            metrics = fit(run, train_batches, val_batches, run_dir)
            if tc.background:
                metrics["background"] = fit_background(run, run_dir)
            if is_vqvae(run.model):  # its second stage: the code prior (vae_cli/training/code_prior_stage.py)
                metrics = fit_code_prior(run, run_dir, metrics)
        dist.barrier()  # every rank leaves together: no process group torn down while rank 0 still tests
        return metrics
    except torch.cuda.OutOfMemoryError:
        raise VaeError(
            f"CUDA out of memory at train.batch_size={tc.batch_size}: use a smaller one, "
            f"e.g. train.batch_size={max(1, tc.batch_size // 2)}"
        ) from None
    finally:
        shutdown()


def build_run(
    cfg: DictConfig,
    data: DataBundle,
    device: torch.device,
    dist: Dist,
    run_dir: Path,
    before_epoch: Callable[[], None] | None = None,
) -> tuple[Run, BatchSource, BatchSource]:
    """The model (resumed from train.resume when set), its optimiser and the train and val batches: a
    Run writing into run_dir, whose `stop` the caller enters around the training."""
    tc = cfg.train
    likelihood = create_likelihood(cfg.loss)
    classes = data_classes(data) if cfg.model.get("conditional") else None  # model.conditional's labels
    model = create_model(
        cfg.model, data.shape, cfg.latent_dim, likelihood, cfg.prior, cfg.posterior, classes
    ).to(device)
    if cfg.model.name in ("conv", "resnet") and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_batches, val_batches = (
        make_batches(
            getattr(data, split),
            tc.batch_size if split == "train" else eval_batch_size(tc.batch_size),
            split == "train",
            cfg.seed,
            device,
            cfg.dataset.in_memory,
            tc.num_workers,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        for split in ("train", "val")
    )
    if classes is not None:  # a conditional model: each batch with its labels, (images, labels)
        train_batches = LabelledBatches(train_batches, data.train.labels)
        val_batches = LabelledBatches(val_batches, data.val.labels)
    optimizer = create_optimizer(model, cfg)
    scheduler = create_scheduler(optimizer, cfg, len(train_batches))
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True) if tc.ema else None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "16-mixed")
    companion = build_companion(cfg, device, dist)
    progress = Progress()
    if tc.resume:
        progress = resume_from(
            Path(tc.resume), cfg, model, optimizer, scheduler, ema, scaler, run_dir, dist, companion
        )
    wrapped = (
        DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if dist.enabled
        else model
    )
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
        GracefulStop(),  # entered by the caller, around the training: `with run.stop:`
        before_epoch=before_epoch,
        companion=companion,
    )
    return run, train_batches, val_batches


def build_companion(cfg: DictConfig, device: torch.device, dist: Dist) -> Any:
    """The objective's own model, when it trains one beside the VAE (objective=factor: its
    discriminator), seeded by `seed` alone: the same on every rank. None for the others."""
    build = OBJECTIVES.get(cfg.objective.name).companion
    if build is None:
        return None
    return build(OmegaConf.to_object(cfg.objective), cfg.latent_dim, device, dist, cfg.seed)


# --- the background model of `vae score score=likelihood_ratio` -------------------------------------------


def check_background_data(data: DataBundle) -> None:
    """train.background perturbs pixels: it needs image data (uint8 pixels), checked before training."""
    if len(data.train) and data.train.take([0]).dtype != torch.uint8:
        raise ConfigError(
            f"train.background=true replaces pixels by random values: it needs images, and {data.name} "
            f"holds other numbers (the likelihood ratio is an image score; use score=neg_elbo for tables)"
        )


def fit_background(main: Run, run_dir: Path) -> dict[str, Any]:
    """The background model of Ren et al. (2019): the same model, trained (and validated) the same way on
    inputs whose pixels are each replaced by a random value with probability train.background_noise, into
    <run>/background/ (its own checkpoints/, tensorboard/ and metrics.json). When train.resume names a
    run folder that has a background model, that one is resumed; the main checkpoints are never touched."""
    cfg, tc = main.cfg, main.cfg.train
    folder = background_dir(run_dir)
    cfg = OmegaConf.merge(cfg, {"train": {"background": False, "resume": None}})
    previous = (
        background_dir(Path(tc.resume).parent.parent) / "checkpoints" / "last.ckpt" if tc.resume else None
    )
    if previous is not None and previous.is_file():
        cfg.train.resume = str(previous)
    log.info(
        "training the background model (each pixel replaced by a random value with probability %g) into %s",
        tc.background_noise,
        folder,
    )
    seed_everything(cfg.seed + main.dist.rank)  # the same start whether or not the main run was resumed
    run, train_batches, val_batches = build_run(cfg, main.data, main.device, main.dist, folder)
    run.stop, run.resume_path = main.stop, main.ckpt_dir / "last.ckpt"
    binary = main.data.binarize == "static"
    return fit(
        run,
        PerturbedBatches(train_batches, tc.background_noise, cfg.seed, binary),
        PerturbedBatches(val_batches, tc.background_noise, cfg.seed + 1, binary),
        folder,
    )


def fit(run: Run, train_batches: BatchSource, val_batches: BatchSource, run_dir: Path) -> dict[str, Any]:
    """Epochs of training, each validated and checkpointed; then the best model's test numbers."""
    tc, progress = run.cfg.train, run.progress
    warmup_steps = round(tc.kl_warmup_epochs * len(train_batches))
    log_start(run)
    started = time.perf_counter()
    train_metrics: dict[str, float] = progress.metrics.get("train", {})
    val_metrics: dict[str, float] = progress.metrics.get("val", {})
    for epoch in range(progress.epoch, tc.epochs):
        train_batches.set_epoch(epoch, progress.batch_in_epoch)
        if run.before_epoch is not None:
            run.before_epoch()
        epoch_start = time.perf_counter()
        epoch_metrics = train_epoch(run, train_batches, warmup_steps)
        if epoch_metrics is None:  # stopped mid-epoch by a signal (every process agreed on the step)
            raise interrupted(run, {})
        run.epoch_seconds.append(time.perf_counter() - epoch_start)
        train_metrics = {**epoch_metrics, "examples_per_sec": len(run.data.train) / run.epoch_seconds[-1]}
        val_metrics = mean_objective(
            run.eval_model, val_batches, run.data, run.cfg, run.device, run.dist, run.companion
        )
        progress.epoch = epoch + 1
        run.epoch_walls.append(time.perf_counter() - epoch_start)
        end_epoch(run, train_metrics, val_metrics, val_batches)
        if tc.early_stop_patience and progress.epoch - progress.best_epoch >= tc.early_stop_patience:
            log.info("early stop: no better val loss for %d epochs", tc.early_stop_patience)
            break
    if run.dist.any(bool(run.stop.requested), run.device):  # a signal after the last step of the last epoch
        raise interrupted(run, train_metrics)
    run.dist.barrier()
    if not run.dist.is_main:
        return {}
    test_metrics = test_best(run)
    log_hparams(run.tb, run.cfg, {"val": val_metrics, "test": test_metrics})
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
        "epoch_train_seconds": run.epoch_seconds,  # the training pass of each epoch this process ran
        "units": "nats per example",
        "automatic": run.automatic,  # the keys left automatic and the values this run gave them
    }
    write_json(run_dir / "metrics.json", metrics)
    print_results(run, metrics, run_dir)
    return metrics


def train_epoch(run: Run, batches: BatchSource, warmup_steps: int) -> dict[str, float] | None:
    """One pass over the training data (or what is left of it after a mid-epoch resume); None when a
    signal stopped it part-way.

    Nothing waits for the device per step, unless `train.skip_nonfinite` asks to inspect every step:
    the meter reads its sums once per `log_every` steps, and several processes agree to stop (a signal
    to one of them) at those same interval steps, inside its one all-reduce."""
    cfg, progress, device = run.cfg, run.progress, run.device
    tc: TrainConfig = OmegaConf.to_object(cfg.train)  # plain attributes: OmegaConf lookups cost ~10 us each
    objective, objective_cfg = OBJECTIVES.get(cfg.objective.name), OmegaConf.to_object(cfg.objective)
    binarize, unit_range = run.data.binarize, run.data.unit_range
    meter = IntervalMeter(progress.partial, device, run.dist)
    # No bar outside a terminal (a log file, a pipe): a line every ~15 s instead, so a long first epoch
    # is not silent
    lines = (
        StepLog(progress.epoch + 1, tc.epochs, len(batches), progress.batch_in_epoch)
        if run.dist.is_main and not console.is_terminal
        else None
    )
    run.model.train()
    with epoch_progress(enabled=run.dist.is_main) as bar:
        task = bar.add_task(
            "train",
            total=len(batches),
            completed=progress.batch_in_epoch,
            epoch=progress.epoch + 1,
            loss="...",
        )
        for batch in batches:
            images, labels = split_batch(batch)  # labels: a conditional model's, else None
            x = prepare_batch(images, binarize)
            inputs = corrupt(x, tc.denoise, tc.noise_level, clamp=unit_range)  # denoising: clean target
            beta = beta_at(progress.step, cfg.beta, warmup_steps)
            run.model.at_step(progress.step)  # the model's own schedules (posterior=categorical's tau)
            terms, loss, finite = train_step(run, tc, objective, objective_cfg, inputs, x, beta, labels)
            progress.batch_in_epoch += 1
            bar.advance(task)
            if lines is not None:
                lines.advance()
            if tc.skip_nonfinite and not run.dist.all(bool(finite), device):  # a per-step sync, only here
                skip_nonfinite_step(run, float(loss.detach()))
                continue
            optimizer_step(run, tc)
            meter.record(
                loss, terms.recon.mean(), terms.kl.mean(), len(x), finite, progress.step, terms.extras
            )

            at_interval = progress.step % tc.log_every == 0 or progress.batch_in_epoch == len(batches)
            stop_here = bool(run.stop.requested) and not run.dist.enabled  # one process stops at once
            if not (at_interval or stop_here):
                continue
            interval = meter.close(bool(run.stop.requested))
            if interval.nonfinite:
                step = interval.first_nonfinite_step or progress.step
                raise nonfinite_error(interval.loss, progress.epoch, step, run.ckpt_dir)
            log_interval(run, interval, beta)
            bar.update(task, loss=fmt(interval.loss))
            if interval.stop:
                run.stop.requested = run.stop.requested or "a signal to another process"
                progress.partial = meter.partial
                return None
    progress.batch_in_epoch, progress.partial = 0, [0.0, 0.0, 0.0, 0.0]
    return meter.epoch_means()


def train_step(
    run: Run,
    tc: TrainConfig,
    objective: Any,
    objective_cfg: Any,
    inputs: torch.Tensor,
    x: torch.Tensor,
    beta: float,
    labels: torch.Tensor | None = None,
) -> tuple[Terms, torch.Tensor, torch.Tensor]:
    """Forward and backward for one batch (gradients clipped when asked): (terms, loss, finite), where
    `finite` (a device tensor) says whether the loss (and, when clipped, the gradient) is finite.
    `labels`: the batch's, which a conditional model sees (None: nothing is set)."""
    with autocast(run.device, tc.precision), conditioned(run.model, labels):
        terms = objective(
            run.model,
            inputs,
            objective_cfg,
            beta,
            target=x,
            forward=run.forward,
            companion=run.companion,
            step=run.progress.step,  # the objective's own schedules (objective=capacity's C)
        )
        loss = terms.loss(beta, tc.free_bits, tc.trim or 0.0)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.companion is not None:  # FactorVAE: the discriminator's own step, on this batch's codes
        terms = terms._replace(extras={**(terms.extras or {}), **run.companion.step(terms.codes)})
    finite = torch.isfinite(loss)
    if tc.grad_clip > 0 or tc.skip_nonfinite:
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.grad_clip or math.inf)
        if not run.scaler.is_enabled():  # with fp16, the scaler itself skips overflowing steps
            finite = finite & torch.isfinite(grad_norm)
    return terms, loss, finite


def optimizer_step(run: Run, tc: TrainConfig) -> None:
    """Apply the gradients: the optimiser, the weights' moving average, a per-step schedule."""
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    if tc.scheduler == "cosine":
        run.scheduler.step()
    run.progress.step += 1


def log_interval(run: Run, interval: Interval, beta: float) -> None:
    lr = run.optimizer.param_groups[0]["lr"]
    values = {"loss": interval.loss, "recon": interval.recon, "kl": interval.kl, "beta": beta, "lr": lr}
    run.tb.scalars("train", {**values, **interval.extras}, run.progress.step)


def end_epoch(
    run: Run, train_metrics: dict[str, float], val_metrics: dict[str, float], val_batches: BatchSource
) -> bool:
    """After an epoch: the plateau schedule, TensorBoard, the checkpoints, a log line. True if it is the
    best epoch so far (by validation loss)."""
    tc, progress = run.cfg.train, run.progress
    if tc.scheduler == "plateau":
        run.scheduler.step(val_metrics["loss"])
    run.tb.scalars("train", {"examples_per_sec": train_metrics["examples_per_sec"]}, progress.step)
    run.tb.scalars("val", val_metrics, progress.step)
    validated = len(run.data.val) > 0  # without a validation split, the latest epoch is the best
    if (
        run.dist.is_main
        and validated
        and tc.image_every
        and (progress.epoch % tc.image_every == 0 or progress.epoch == tc.epochs)
    ):
        prior = not draws_no_codes(run.cfg)  # a plain autoencoder (objective=ae) has no prior to sample
        prior = prior and not is_vqvae(run.model)  # (its code prior is fitted after these epochs)
        log_images(run.tb, run.eval_model, val_batches, run.data, run.cfg.seed, progress.step, prior)
    is_best = not validated or val_metrics["loss"] < progress.best_val
    if is_best:
        progress.best_epoch = progress.epoch
        if validated:
            progress.best_val = val_metrics["loss"]
    if run.dist.is_main:
        payload = checkpoint_payload(run, train_metrics, val_metrics)
        save_checkpoint(run.ckpt_dir / "last.ckpt", payload)
        if is_best:
            save_checkpoint(run.ckpt_dir / "best.ckpt", payload)
    log.info(
        "epoch %d/%d  train loss %s  val loss %s (recon %s, KL %s)%s  %.0f ex/s%s",
        progress.epoch,
        tc.epochs,
        fmt(train_metrics["loss"]),
        fmt(val_metrics["loss"]),
        fmt(val_metrics["recon"]),
        fmt(val_metrics["kl"]),
        "  *best*" if is_best else "",
        train_metrics["examples_per_sec"],
        run_eta(run),
    )
    return is_best


def run_eta(run: Run) -> str:
    """`  eta 1 min 20 s` for the epochs still to run (the mean of this run's whole epochs so far, with
    validation), or "" after the last one. The first epoch includes one-off warm-up, so the estimate
    errs long at first."""
    left = run.cfg.train.epochs - run.progress.epoch
    if left <= 0 or not run.epoch_walls:
        return ""
    return f"  eta {duration(left * sum(run.epoch_walls) / len(run.epoch_walls))}"


def test_best(run: Run) -> dict[str, float]:
    """The best (by validation loss) model's numbers on all of the test split: the training objective
    and what its codes say (active units, the MIG on data with factors)."""
    cfg, tc, data = run.cfg, run.cfg.train, run.data
    model = run.eval_model
    best = run.ckpt_dir / "best.ckpt"
    if best.is_file():
        ckpt = load_checkpoint(best, run.device)
        model.load_state_dict(ckpt["model"])
        if run.companion is not None and ckpt.get("companion"):
            run.companion.load_state_dict(ckpt["companion"])  # the discriminator of that epoch
    test_batches = make_batches(
        data.test,
        eval_batch_size(tc.batch_size),
        False,
        cfg.seed,
        run.device,
        cfg.dataset.in_memory,
        tc.num_workers,
    )
    test_batches = with_labels(test_batches, data.test, model)  # a conditional model's: (images, labels)
    metrics = mean_objective(model, test_batches, data, cfg, run.device, companion=run.companion)
    if len(data.test):
        mu = encode_split(model, data.test, data.binarize, cfg.seed)
        metrics.update(representation_metrics(mu, data.test.factors))
    run.tb.scalars("test", metrics, run.progress.step)
    return metrics


@torch.no_grad()
def mean_objective(
    model: VAE,
    batches: BatchSource,
    data: DataBundle,
    cfg: DictConfig,
    device: torch.device,
    dist: Dist | None = None,
    companion: Any = None,
) -> dict[str, float]:
    """The training objective over a split, nats per example: loss (with the configured beta, and with
    train.trim each batch's trimmed mean, so that the anomalies of a contaminated validation split do
    not decide early stopping), recon, KL and negative ELBO (over every example), with z ~ q(z|x).
    `companion` is the objective's own model (FactorVAE's discriminator, for its TC term), if any.

    A generator seeded the same way every time draws the noise, so the number moves only when the
    model does, and evaluation leaves the training RNG untouched. With several processes, each
    evaluates its shard and the sums are all-reduced. The objective's own terms (Terms.extras: TC,
    MMD, ...) are averaged too, under their names; with step=None its schedules are at their end."""
    tc = cfg.train
    objective, objective_cfg = OBJECTIVES.get(cfg.objective.name), OmegaConf.to_object(cfg.objective)
    model.eval()
    generator = torch.Generator(device=device).manual_seed(cfg.seed + (dist.rank if dist else 0))
    sums, n = torch.zeros(3, dtype=torch.float64, device=device), 0
    extra_sums: dict[str, torch.Tensor] = {}
    for batch in batches:
        images, labels = split_batch(batch)
        x = prepare_batch(images, data.binarize, generator)
        inputs = corrupt(x, tc.denoise, tc.noise_level, generator, clamp=data.unit_range)
        with autocast(device, tc.precision), conditioned(model, labels):
            terms = objective(
                model, inputs, objective_cfg, cfg.beta, target=x, generator=generator, companion=companion
            )
            loss = terms.loss(cfg.beta, tc.free_bits, tc.trim or 0.0)  # trimmed like training's
        sums += torch.stack([loss * len(x), terms.recon.sum(), terms.kl.sum()]).double()
        for name, value in (terms.extras or {}).items():
            value = torch.as_tensor(value, device=device).double() * len(x)
            extra_sums[name] = extra_sums[name] + value if name in extra_sums else value
        n += len(x)
    names = list(extra_sums)
    count = torch.tensor([float(n)], dtype=torch.float64, device=device)
    totals = torch.cat([sums, count, *(extra_sums[k].reshape(1) for k in names)])
    if dist is not None:
        dist.sum(totals)
    model.train()
    if totals[3] == 0:  # an empty split (dataset.val_fraction=0, test_fraction=0): no numbers
        return {"loss": math.nan, "recon": math.nan, "kl": math.nan, "neg_elbo": math.nan}
    loss, recon, kl, _, *extras = (totals / totals[3]).tolist()
    means = dict(zip(names, extras, strict=True))
    return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": recon + kl, **means}


@torch.no_grad()
def log_images(
    tb: TensorBoard,
    model: VAE,
    val_batches: BatchSource,
    data: DataBundle,
    seed: int,
    step: int,
    prior: bool = True,
) -> None:
    """Validation reconstructions (originals above reconstructions, z = mu) and, when the model has a
    prior (`prior`), prior samples.

    The originals are the real images (grey, never binarised); the reconstructions are of the model's
    input, binarised like the training data, as `vae reconstruct` and `vae score` show them."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    images, labels = split_batch(next(iter(val_batches)))
    images, labels = images[:32], None if labels is None else labels[:32]
    shown, x = shown_and_input(images, data.binarize, generator)
    with conditioned(model, labels):  # a conditional model: the examples' own labels
        tb.image_grid("val/reconstructions", interleave_rows(shown, model.reconstruct(x), 8), step)
    if prior:  # (a conditional model's samples take its classes in turn)
        tb.image_grid("samples/prior", model.sample(NUM_IMAGES, generator=generator), step)
    model.train()


def eval_batch_size(train_batch_size: int) -> int:
    return EVAL_BATCH_FACTOR * train_batch_size


# --- how a run starts, stops and ends ---------------------------------------------------------------------


def log_start(run: Run) -> None:
    data = run.data
    log.info(
        "training %s on %s (%d train / %d val examples, %s) on %s%s; %s parameters",
        run.cfg.model.name,
        data.name,
        len(data.train),
        len(data.val),
        "x".join(map(str, data.shape)),
        run.device,
        f" x {run.dist.world_size} processes" if run.dist.enabled else "",
        f"{sum(p.numel() for p in run.model.parameters()):,}",
    )


def print_results(run: Run, metrics: dict[str, Any], run_dir: Path) -> None:
    def core(values: dict[str, float]) -> dict[str, float]:
        return {k: values[k] for k in ("loss", "recon", "kl", "neg_elbo") if k in values}

    console.print(
        metrics_table(
            f"{run.cfg.model.name} on {run.data.name}: nats per example",
            {
                "train (last epoch)": core(metrics["train"]),
                "val (last epoch)": core(metrics["val"]),
                f"test (best, epoch {metrics['best_epoch']})": core(metrics["test"]),
            },
        )
    )
    console.print(f"outputs in [bold]{run_dir}[/bold]  (tensorboard --logdir {run_dir / 'tensorboard'})")


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


def interrupted(run: Run, train_metrics: dict[str, float]) -> Interrupted:
    """Write a resumable checkpoint (mid-epoch: it records how far the epoch got) and say how to go on."""
    path = run.ckpt_dir / "last.ckpt"
    where = f"epoch {run.progress.epoch + 1}, step {run.progress.step}"
    if not run.dist.is_main:
        return Interrupted(
            f"interrupted ({run.stop.requested}): rank {run.dist.rank} stopped at {where}; rank 0 writes "
            f"the checkpoint"
        )
    save_checkpoint(path, checkpoint_payload(run, train_metrics, {}))
    what = "the background model" if run.resume_path is not None else ""
    message = (
        f"interrupted ({run.stop.requested}): stopped {what + ' ' if what else ''}at {where}; checkpoint "
        f"written; continue with: vae train train.resume={(run.resume_path or path).resolve()} (and the same "
        f"overrides)"
    )
    log_to_files(message)  # train.log says how to go on too; the console gets it once, as the exit line
    return Interrupted(message)
