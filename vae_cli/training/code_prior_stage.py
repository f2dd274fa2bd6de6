"""`vae train`'s second stage for model=vqvae: its code prior, fitted to the training set's codes.

The first stage (the loop of loop.py) leaves the model with its best weights (`test_best` loads them).
Every split is then encoded once into its grids of codebook indices (binarised data with one draw, seeded
by `seed`), and the code prior p(z) (vae_cli/models/code_prior.py) is fitted to the training grids by
maximum likelihood: Adam at model.prior_lr, train.batch_size grids a step, model.prior_epochs passes each in
an order seeded by seed + epoch, validated on the val grids. Each epoch ends in last.ckpt (stage 2: its
weights, optimiser and counters in `code_prior`) and, when its val NLL is the lowest yet (every epoch
without a val split), in best.ckpt; both hold the first stage's best weights, so `vae sample` and
`vae evaluate` read the prior from either. `train.resume=<a stage-two checkpoint>` continues at the next
epoch exactly; an interrupt mid-epoch keeps the last complete epoch's checkpoint and says how to go on.
In a DDP run every process fits the same prior on the same codes (no collective), rank 0 writes.

metrics.json gains `code_prior`: its NLL per example (nats) and bits per code on each split, and the test
bound -log p(x) <= -log p(x|z_q) - log p(z_q) in nats and bits per dimension; its `test` kl and neg_elbo
become the fitted prior's (the first stage's were those of the uniform prior, L log K), so that a sweep's
summary shows the bound.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vae_cli.checkpoint import load_checkpoint, save_checkpoint
from vae_cli.console import StepLog, console, epoch_progress, fmt, log_to_files, metrics_table
from vae_cli.data import make_batches, prepare_batch
from vae_cli.data.base import Split
from vae_cli.errors import Interrupted, TrainingStopped
from vae_cli.io import write_json
from vae_cli.metrics import bits_per_dim
from vae_cli.models.vqvae import VQVAE
from vae_cli.tensorboard import TensorBoard
from vae_cli.training.state import checkpoint_payload

if TYPE_CHECKING:
    from vae_cli.training.loop import Run

log = logging.getLogger("vae")

#: code grids scored at a time in evaluation (no activations kept for a backward pass)
EVAL_GRIDS = 1024
SPLITS = ("train", "val", "test")


def fit_code_prior(run: Run, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Stage two (see the module's docstring) after the first stage's `metrics`, which it returns with
    `code_prior` added (and rewrites metrics.json with)."""
    cfg, model, progress, tc = run.cfg, run.eval_model, run.progress, run.cfg.train
    mc, prior = cfg.model, run.eval_model.code_prior
    run.dist.barrier()  # rank 0 has tested the best weights; the others read them here
    best = run.ckpt_dir / "best.ckpt"
    if not run.dist.is_main and best.is_file():
        model.load_state_dict(load_checkpoint(best, run.device)["model"])
    state = progress.code_prior if progress.stage == 2 else None
    if state:
        prior.load_state_dict(state["weights"])  # (best.ckpt's is the best epoch's, not the last one's)
    progress.stage = 2
    optimizer = torch.optim.Adam(prior.parameters(), lr=mc.prior_lr)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = mc.prior_lr  # a new model.prior_lr on the command line wins
    counters = {"epoch": 0, "step": 0, "best_val": math.inf, "best_epoch": 0, "train_nll": math.nan}
    counters.update({k: state[k] for k in counters if state and k in state})
    started = time.perf_counter()
    grids = {split: encode_grids(model, getattr(run.data, split), run) for split in SPLITS}
    positions, validated = model.positions, len(grids["val"]) > 0
    tb = TensorBoard(run_dir / "tensorboard", enabled=run.dist.is_main)
    log.info(
        "stage two: fitting the code prior to %d training grids of %d codes (%d of %d epochs done)",
        len(grids["train"]),
        positions,
        counters["epoch"],
        mc.prior_epochs,
    )
    stage_one = {"train": metrics.get("train", {}), "val": metrics.get("val", {})}
    for epoch in range(counters["epoch"], mc.prior_epochs):
        train_nll = prior_epoch(run, prior, optimizer, grids["train"], epoch, counters, tb)
        if train_nll is None:
            raise interrupted(run, epoch)
        val_nll = mean_nll(prior, grids["val"])
        is_best = not validated or val_nll < counters["best_val"]
        counters.update(epoch=epoch + 1, train_nll=train_nll)
        if is_best:
            counters.update(best_epoch=epoch + 1, best_val=val_nll if validated else math.inf)
        progress.code_prior = {**counters, "weights": prior.state_dict(), "optimizer": optimizer.state_dict()}
        if run.dist.is_main:
            payload = checkpoint_payload(run, stage_one["train"], stage_one["val"])
            save_checkpoint(run.ckpt_dir / "last.ckpt", payload)
            if is_best:
                save_checkpoint(best, payload)
        tb.scalars("prior_val", {"nll": val_nll, "bits_per_code": bits(val_nll, positions)}, counters["step"])
        log.info(
            "code prior epoch %d/%d  train %s  val %s nats per example (%.3f bits per code)%s",
            epoch + 1,
            mc.prior_epochs,
            fmt(train_nll),
            fmt(val_nll),
            bits(val_nll, positions),
            "  *best*" if is_best and validated else "",
        )
    if counters["best_epoch"] and best.is_file():  # the best epoch's prior: what best.ckpt holds
        model.load_state_dict(load_checkpoint(best, run.device)["model"])
    nll = {split: mean_nll(prior, grids[split]) for split in SPLITS}  # the best prior's, every split
    test_nll = nll["test"]
    tb.scalars("prior_test", {"nll": test_nll, "bits_per_code": bits(test_nll, positions)}, counters["step"])
    if run.dist.is_main and tc.image_every and counters["epoch"]:
        generator = torch.Generator(device=run.device).manual_seed(cfg.seed)
        tb.image_grid("samples/prior", model.sample(64, generator=generator), counters["step"])
    tb.close()
    if not run.dist.is_main:
        return metrics
    metrics = {**metrics, "code_prior": prior_metrics(model, metrics, counters, nll)}
    if metrics.get("test") and math.isfinite(test_nll):  # the test KL is now the fitted prior's, not L log K
        kl, recon = metrics["code_prior"]["test_nll"], metrics["test"]["recon"]
        metrics["test"] = {**metrics["test"], "kl": kl, "neg_elbo": recon + kl}
    metrics["code_prior"]["wall_time_s"] = time.perf_counter() - started
    write_json(run_dir / "metrics.json", metrics)
    print_prior_results(metrics["code_prior"], cfg.model.name)
    return metrics


def prior_epoch(
    run: Run,
    prior: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grids: torch.Tensor,
    epoch: int,
    counters: dict[str, Any],
    tb: TensorBoard,
) -> float | None:
    """One pass over the training grids, in the order of seed + epoch: the mean NLL per example (nats),
    or None when a signal stopped it (nothing of the epoch is kept)."""
    cfg, tc = run.cfg, run.cfg.train
    order = torch.randperm(len(grids), generator=torch.Generator().manual_seed(cfg.seed + epoch))
    prior.train()
    total, count = torch.zeros((), dtype=torch.float64, device=grids.device), 0
    window, seen = torch.zeros((), dtype=torch.float64, device=grids.device), 0
    steps, epochs = math.ceil(len(grids) / tc.batch_size), cfg.model.prior_epochs
    # a bar in a terminal; elsewhere a line every ~15 s, as the first stage's epochs
    lines = StepLog(epoch + 1, epochs, steps) if run.dist.is_main and not console.is_terminal else None
    with epoch_progress(enabled=run.dist.is_main) as bar:
        task = bar.add_task("prior", total=steps, epoch=f"{epoch + 1} of the code prior", loss="...")
        for start in range(0, len(grids), tc.batch_size):
            z = grids[order[start : start + tc.batch_size].to(grids.device)]
            loss = -prior.log_prob(z).mean()  # nats per example
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            counters["step"] += 1
            total += loss.detach().double() * len(z)
            window += loss.detach().double() * len(z)
            count, seen = count + len(z), seen + len(z)
            bar.advance(task)
            if lines is not None:
                lines.advance()
            if counters["step"] % tc.log_every == 0:  # one host sync per interval
                mean = float(window) / seen
                tb.scalars(
                    "prior", {"loss": mean, "bits_per_code": bits(mean, grids.shape[1])}, counters["step"]
                )
                bar.update(task, loss=fmt(mean))
                window.zero_()
                seen = 0
            if run.stop.requested:
                return None
    prior.eval()
    mean = float(total) / max(count, 1)
    if not math.isfinite(mean):
        raise TrainingStopped(
            f"non-finite code prior loss ({mean}) in its epoch {epoch + 1}; the last good checkpoint is kept: "
            f"lower model.prior_lr"
        )
    return mean


@torch.inference_mode()
def encode_grids(model: VQVAE, split: Split, run: Run) -> torch.Tensor:
    """A split's grids of codebook indices (N, h * w) long, on the model's device, in eval mode (the
    codebook does not move); binarised data with one draw seeded by `seed`."""
    if len(split) == 0:
        return torch.empty(0, model.positions, dtype=torch.long, device=run.device)
    cfg, tc = run.cfg, run.cfg.train
    model.eval()
    generator = torch.Generator(device=run.device).manual_seed(cfg.seed + 3)
    batches = make_batches(
        split, 4 * tc.batch_size, False, cfg.seed, run.device, cfg.dataset.in_memory, tc.num_workers
    )
    return torch.cat(
        [model.indices(prepare_batch(images, run.data.binarize, generator)) for images in batches]
    )


@torch.inference_mode()
def mean_nll(prior: torch.nn.Module, grids: torch.Tensor) -> float:
    """-log p(z) averaged over grids (nats per example); NaN for none."""
    if len(grids) == 0:
        return math.nan
    was_training = prior.training
    prior.eval()
    total = sum(float(-prior.log_prob(z).double().sum()) for z in grids.split(EVAL_GRIDS))
    prior.train(was_training)
    return total / len(grids)


def bits(nll: float, positions: int) -> float:
    """Nats per example as bits per code."""
    return nll / (positions * math.log(2))


def prior_metrics(
    model: VQVAE, metrics: dict[str, Any], counters: dict[str, Any], nll: dict[str, float]
) -> dict[str, Any]:
    """metrics.json's `code_prior`: the best prior's NLL per example on each split (`nll`), in nats and in
    bits per code, and the test bound."""
    positions = model.positions
    recon = metrics.get("test", {}).get("recon", math.nan)
    result: dict[str, Any] = {
        "epochs": counters["epoch"],
        "steps": counters["step"],
        "best_epoch": counters["best_epoch"],
        "codes_per_example": positions,
        "codebook_size": model.quantizer.size,
        "uniform_nll": model.code_prior.uniform_nll(),  # log K per code: the first stage's prior
        "last_epoch_train_loss": counters["train_nll"],  # the running mean while it trained
        "units": "nats per example",
    }
    for split in SPLITS:
        result[f"{split}_nll"] = nll[split]
        result[f"{split}_bits_per_code"] = bits(nll[split], positions)
    # -log p(x) <= -log p(x|z_q) - log p(z_q): the posterior is deterministic, KL = -log p(z_q)
    result["test_neg_elbo"] = recon + nll["test"]
    result["test_bits_per_dim"] = bits_per_dim(result["test_neg_elbo"], math.prod(model.image_shape))
    return result


def print_prior_results(m: dict[str, Any], name: str) -> None:
    rows = {
        "train": {"nll": m["train_nll"], "bits per code": m["train_bits_per_code"]},
        f"val (best, epoch {m['best_epoch']})": {
            "nll": m["val_nll"],
            "bits per code": m["val_bits_per_code"],
        },
        "test (best)": {"nll": m["test_nll"], "bits per code": m["test_bits_per_code"]},
    }
    console.print(metrics_table(f"{name}'s code prior: -log p(z_q), nats per example", rows))
    console.print(
        f"test: -log p(x) <= -log p(x|z_q) - log p(z_q) = {fmt(m['test_neg_elbo'])} nats "
        f"({m['test_bits_per_dim']:.4f} bits/dim)"
    )


def interrupted(run: Run, epoch: int) -> Interrupted:
    """A signal in an epoch of the code prior: its last complete epoch's checkpoint stays, to go on from."""
    path = (run.ckpt_dir / "last.ckpt").resolve()
    message = (
        f"interrupted ({run.stop.requested}): stopped the code prior (stage two) in its epoch {epoch + 1}; the "
        f"checkpoint of the last complete epoch is kept; continue with: vae train train.resume={path} (and "
        f"the same overrides)"
    )
    log_to_files(message)
    return Interrupted(message)
