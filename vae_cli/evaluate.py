"""`vae evaluate`: how good a trained model is on one split, every number per example in nats.

    neg_elbo   -ELBO = recon + kl, both averaged over the same iwae_k draws z_i ~ q(z|x) as the bound below
    iwae_nll   -IWAE_k = -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), the importance-weighted estimate of
               -log p(x) (Burda et al. 2015): an upper bound on it in expectation, tightening as k grows,
               and never above neg_elbo (Jensen's inequality on the same draws)
    *_bits_per_dim  the same divided by D ln 2 (D = C * H * W)
    active_units    latent dimensions with Var_x(E_q[z_j|x]) > 0.01
    kl_per_dim      KL(q(z_j|x) || N(0, 1)) averaged over x, in closed form (it sums to kl up to the
                    Monte Carlo error of k draws)
    probe_accuracy  a logistic regression on mu, fitted on the train split, scored on this one (labelled data)
    mig             the Mutual Information Gap between mu and the ground-truth factors (Chen et al. 2018),
                    on datasets that have them (synthetic): 0 entangled .. 1 one dimension per factor

Binarised data is binarised once, with a generator seeded by `seed`, so every number sees the same x.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.table import Table

from vae_cli.api import Trained, load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_evaluate_config
from vae_cli.data import DataBundle, ImageSplit, make_batches, prepare_batch
from vae_cli.data.base import Split
from vae_cli.logging import batch_progress, console, fmt
from vae_cli.metrics import (
    active_units,
    bits_per_dim,
    latent_variances,
    logistic_probe,
    mutual_information_gap,
)
from vae_cli.models import VAE
from vae_cli.objectives import gaussian_kl, importance_weighted_bound

log = logging.getLogger("vae")

ACTIVE_THRESHOLD = 0.01


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_evaluate_config)
    device = next(trained.model.parameters()).device
    data = load_data(trained, cfg.data_dir)
    split = pick_split(data, cfg.split, cfg.max_examples)
    num_dims = math.prod(trained.model.image_shape)
    log.info(
        "evaluating %s on %d %s examples of %s with iwae_k=%d on %s",
        trained.path,
        len(split),
        cfg.split,
        data.name,
        cfg.iwae_k,
        device,
    )

    started = time.perf_counter()
    sums, mu = evaluate_split(trained, split, data.binarize, cfg, device)
    n = len(mu)
    kl_per_dim = (sums["kl_per_dim"] / n).tolist()
    metrics: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "dataset": data.name,
        "split": cfg.split,
        "num_examples": n,
        "iwae_k": cfg.iwae_k,
        "seed": cfg.seed,
        "units": "nats per example",
        "neg_elbo": sums["neg_elbo"] / n,
        "recon": sums["recon"] / n,
        "kl": sums["kl"] / n,
        "iwae_nll": sums["iwae_nll"] / n,
    }
    metrics["elbo_bits_per_dim"] = bits_per_dim(metrics["neg_elbo"], num_dims)
    metrics["iwae_bits_per_dim"] = bits_per_dim(metrics["iwae_nll"], num_dims)
    metrics["num_dims"] = num_dims
    metrics["latent_dim"] = trained.model.latent_dim
    metrics["active_units"] = active_units(mu, ACTIVE_THRESHOLD)
    metrics["active_threshold"] = ACTIVE_THRESHOLD
    metrics["kl_per_dim"] = kl_per_dim
    metrics["mu_variance_per_dim"] = latent_variances(mu).tolist()
    metrics["mig"] = split_mig(split, mu)
    metrics["probe_accuracy"] = None
    metrics["probe_train_examples"] = 0
    if cfg.probe:
        metrics.update(probe(trained, data, split, mu, cfg, device))
    metrics["wall_time_s"] = time.perf_counter() - started

    path = out / f"metrics_{cfg.split}.json"
    path.write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    if cfg.log_to_run and (tb := run_tensorboard(trained)):
        scalars = [
            "neg_elbo",
            "recon",
            "kl",
            "iwae_nll",
            "iwae_bits_per_dim",
            "active_units",
            "probe_accuracy",
            "mig",
        ]
        tb.scalars(
            f"evaluate/{cfg.split}", {k: metrics[k] for k in scalars if metrics[k] is not None}, trained.step
        )
        tb.close()
        log.info("logged evaluate/%s to %s", cfg.split, trained.run_dir / "tensorboard")
    console.print(results_table(metrics, data.name))
    console.print(f"wrote [bold]{path}[/bold]")
    return metrics


@torch.inference_mode()
def evaluate_split(
    trained: Trained, split: Split, binarize: str, cfg: DictConfig, device: torch.device
) -> tuple[dict[str, Any], torch.Tensor]:
    """Sums over the split of the per-example terms, and every example's mu (N, latent_dim) on the CPU."""
    model = trained.model
    data_generator = torch.Generator(device=device).manual_seed(cfg.seed)
    noise_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    batches = make_batches(split, cfg.batch_size, False, cfg.seed, device, trained.dataset.in_memory)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # recon, kl, -elbo, -iwae
    kl_per_dim = torch.zeros(model.latent_dim, dtype=torch.float64, device=device)
    mus = []
    with batch_progress("evaluate", eta=True) as bar:
        task = bar.add_task("evaluate", total=len(batches))
        for images in batches:
            x = prepare_batch(images, binarize, data_generator)  # binarised once, with a fixed seed
            est = importance_weighted_bound(model, x, cfg.iwae_k, cfg.chunk, noise_generator)
            mu, logvar = model.encode(x)
            recon, kl = -est.log_px_given_z, -est.log_prior_ratio
            sums += torch.stack([recon.sum(), kl.sum(), (recon + kl).sum(), -est.log_px.sum()])
            kl_per_dim += gaussian_kl(mu, logvar).double().sum(0)
            mus.append(mu.float().cpu())
            bar.advance(task)
    recon, kl, neg_elbo, iwae_nll = sums.tolist()
    result = {
        "recon": recon,
        "kl": kl,
        "neg_elbo": neg_elbo,
        "iwae_nll": iwae_nll,
        "kl_per_dim": kl_per_dim.cpu(),
    }
    return result, torch.cat(mus)


def probe(
    trained: Trained, data: DataBundle, split: Split, mu: torch.Tensor, cfg: DictConfig, device: torch.device
) -> dict[str, Any]:
    """Logistic regression on mu: fitted on (at most probe_train_size of) the train split, scored here."""
    labels = split.labels if isinstance(split, ImageSplit) else None
    train = data.train
    if labels is None or not isinstance(train, ImageSplit) or train.labels is None:
        log.info("no labels in %s: the logistic-regression probe is skipped", data.name)
        return {}
    if cfg.split == "train":
        train_mu, train_labels = mu, labels
    else:
        if len(train) > cfg.probe_train_size:
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
            train = train.subset(pick[: cfg.probe_train_size].sort().values)
        train_mu, train_labels = encode_means(trained, train, data.binarize, cfg, device)
    accuracy = logistic_probe(train_mu, train_labels, mu, labels)
    return {"probe_accuracy": accuracy, "probe_train_examples": len(train_mu)}


@torch.inference_mode()
def encode_means(
    trained: Trained, split: ImageSplit, binarize: str, cfg: DictConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    batches = make_batches(split, cfg.batch_size, False, cfg.seed, device)
    mus = [
        trained.model.encode(prepare_batch(images, binarize, generator))[0].float().cpu()
        for images in batches
    ]
    return torch.cat(mus), split.labels


def results_table(metrics: dict[str, Any], dataset: str) -> Table:
    m = metrics
    table = Table(title=f"{dataset} {m['split']}: {m['num_examples']} examples, nats per example")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("-ELBO", f"{fmt(m['neg_elbo'])}  ({m['elbo_bits_per_dim']:.4f} bits/dim)")
    table.add_row("  reconstruction", fmt(m["recon"]))
    table.add_row("  KL", fmt(m["kl"]))
    table.add_row(
        f"-log p(x), IWAE k={m['iwae_k']}", f"{fmt(m['iwae_nll'])}  ({m['iwae_bits_per_dim']:.4f} bits/dim)"
    )
    table.add_row("active units", f"{m['active_units']} / {m['latent_dim']}")
    top = sorted(enumerate(m["kl_per_dim"]), key=lambda t: -t[1])[:5]
    table.add_row("KL per dimension (top 5)", ", ".join(f"z{j} {v:.2f}" for j, v in top))
    if m.get("mig") is not None:
        table.add_row("MIG (disentanglement)", f"{m['mig']:.4f}")
    if m["probe_accuracy"] is not None:
        table.add_row(
            "probe accuracy", f"{m['probe_accuracy']:.4f}  (fit on {m['probe_train_examples']} train)"
        )
    table.add_row("wall time", f"{m['wall_time_s']:.1f} s")
    return table


def split_mig(split: Split, mu: torch.Tensor) -> float | None:
    """The Mutual Information Gap of the codes mu against the split's ground-truth factors; None when the
    dataset has no factors."""
    factors = split.factors if isinstance(split, ImageSplit) else None
    if factors is None or len(factors) != len(mu) or len(mu) < 2:
        return None
    return mutual_information_gap(mu, factors)


@torch.inference_mode()
def representation_metrics(
    model: VAE, split: Split, binarize: str, device: torch.device, seed: int, batch_size: int = 256
) -> dict[str, int | float]:
    """What the codes say about the data, for a training run's final report: active units and, on data
    with ground-truth factors, the MIG. The split is encoded once (z = mu), binarised with a fixed seed."""
    if len(split) == 0:
        return {}
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed + 2)
    batches = make_batches(split, batch_size, False, seed, device)
    mu = torch.cat([model.encode(prepare_batch(x, binarize, generator))[0].float().cpu() for x in batches])
    model.train(was_training)
    result: dict[str, int | float] = {"active_units": active_units(mu, ACTIVE_THRESHOLD)}
    if (mig := split_mig(split, mu)) is not None:
        result["mig"] = mig
    return result
