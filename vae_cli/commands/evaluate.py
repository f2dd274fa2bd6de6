"""`vae evaluate`: how good a trained model is on one split, every number per example in nats.

    neg_elbo   -ELBO = recon + kl: recon averaged over the same iwae_k draws z_i ~ q(z|x) as the bound below,
               kl in closed form (as in training) for posterior=gaussian with prior=standard, else the
               Monte Carlo estimate log q(z|x) - log p(z) on those draws; an upper bound on -log p(x)
    iwae_nll   -IWAE_k = -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), the importance-weighted estimate of
               -log p(x) (Burda et al. 2015): an upper bound on it in expectation, tightening as k grows,
               tighter than neg_elbo (see vae_cli/estimators.py)
    *_bits_per_dim  the same divided by D ln 2 (D = C * H * W)
    data       8-bit (uint8 pixels), binary (8-bit, all 0 or 255), binarised (dataset.binarize), continuous
    bound      what neg_elbo and iwae_nll bound, in words: -log p(x) of the 8-bit data (loss=logistic on
               8-bit images), of the binary data (loss=bernoulli on binary or binarised images), or no
               probability of discrete data (a Gaussian's density, Bernoulli's BCE on grey levels)
    discrete_* a Gaussian on 8-bit images: recon, neg_elbo, iwae_nll and their bits per dimension under the
               discretised Gaussian (Likelihood.on_8bit_data), from the same draws: upper bounds on
               -log p(x) of the 8-bit data
    comparable the keys of the numbers that compare with published ones on the same data ([] if none)
    active_units    latent dimensions with Var_x(code_j(x)) > 0.01, code = the posterior's mean code
    kl_per_dim      KL(q(z_j|x) || N(0, 1)) averaged over x, in closed form (it sums to kl); with a mixture
                    prior or a flow posterior, that of the encoder's Gaussian (kl_per_dim_means says so)
    prior, posterior  the model's prior and posterior (prior=..., posterior=...)
    probe_accuracy  a logistic regression on mu, fitted on the train split, scored on this one (labelled data)
    mig             the Mutual Information Gap between mu and the ground-truth factors (Chen et al. 2018),
                    on datasets that have them (synthetic): 0 entangled .. 1 one dimension per factor

Binarised data is binarised once, with a generator seeded by `seed`, so every number sees the same x.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.table import Table

from vae_cli.api import Trained
from vae_cli.commands.common import load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_evaluate_config
from vae_cli.console import console, fmt
from vae_cli.data import DataBundle
from vae_cli.data.base import Split, holds_8bit_pixels
from vae_cli.estimators import encode_split, estimate_split
from vae_cli.io import write_json
from vae_cli.metrics import (
    ACTIVE_THRESHOLD,
    active_units,
    bits_per_dim,
    latent_variances,
    logistic_probe,
    split_mig,
)

log = logging.getLogger("vae")

KL_PER_DIM_CLOSED_FORM = "KL(q(z_j|x) || N(0, 1)) averaged over x, in closed form; it sums to kl"
KL_PER_DIM_OF_THE_GAUSSIAN = (
    "KL(q0(z_j|x) || N(0, 1)) of the encoder's Gaussian (before any flow), averaged over x, in closed form: "
    "which dimensions carry information; it does not sum to kl, estimated on the draws (the prior or the "
    "posterior does not factorise over dimensions)"
)


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_evaluate_config)
    device = trained.device
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
    kind = data_kind(data, split)
    loss = trained.config.loss.name
    gaussian_on_pixels = kind in ("8-bit", "binary") and loss == "gaussian"
    discrete = trained.model.likelihood.on_8bit_data() if gaussian_on_pixels else None
    per_example = estimate_split(
        trained.model,
        split,
        binarize=data.binarize,
        k=cfg.iwae_k,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        chunk=cfg.chunk,
        in_memory=trained.dataset.in_memory,
        discrete=discrete,
    )
    mu = per_example["mu"]
    metrics: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "dataset": data.name,
        "split": cfg.split,
        "num_examples": len(mu),
        "iwae_k": cfg.iwae_k,
        "seed": cfg.seed,
        "units": "nats per example",
        **{key: float(per_example[key].mean()) for key in ("neg_elbo", "recon", "kl", "iwae_nll")},
    }
    metrics["elbo_bits_per_dim"] = bits_per_dim(metrics["neg_elbo"], num_dims)
    metrics["iwae_bits_per_dim"] = bits_per_dim(metrics["iwae_nll"], num_dims)
    metrics.update(what_is_bounded(loss, kind))
    if discrete is not None:
        for key in ("discrete_neg_elbo", "discrete_recon", "discrete_iwae_nll"):
            metrics[key] = float(per_example[key].mean())
        metrics["discrete_elbo_bits_per_dim"] = bits_per_dim(metrics["discrete_neg_elbo"], num_dims)
        metrics["discrete_iwae_bits_per_dim"] = bits_per_dim(metrics["discrete_iwae_nll"], num_dims)
    metrics["num_dims"] = num_dims
    metrics["latent_dim"] = trained.model.latent_dim
    metrics["active_units"] = active_units(mu)
    metrics["active_threshold"] = ACTIVE_THRESHOLD
    metrics["prior"] = trained.config.prior.name
    metrics["posterior"] = trained.config.posterior.name
    metrics["kl_per_dim"] = per_example["kl_per_dim"].mean(0).tolist()
    metrics["kl_per_dim_means"] = (
        KL_PER_DIM_CLOSED_FORM if trained.model.closed_form else KL_PER_DIM_OF_THE_GAUSSIAN
    )
    metrics["mu_variance_per_dim"] = latent_variances(mu).tolist()
    metrics["mig"] = split_mig(mu, split.factors)
    metrics["probe_accuracy"] = None
    metrics["probe_train_examples"] = 0
    if cfg.probe:
        metrics.update(probe(trained, data, split, mu, cfg))
    metrics["wall_time_s"] = time.perf_counter() - started

    path = out.path(f"metrics_{cfg.split}.json")
    write_json(path, metrics)
    if cfg.log_to_run and (tb := run_tensorboard(trained)):
        scalars = [
            "neg_elbo",
            "recon",
            "kl",
            "iwae_nll",
            "iwae_bits_per_dim",
            "discrete_iwae_bits_per_dim",
            "active_units",
            "probe_accuracy",
            "mig",
        ]
        tb.scalars(
            f"evaluate/{cfg.split}",
            {k: metrics[k] for k in scalars if metrics.get(k) is not None},
            trained.step,
        )
        tb.close()
        log.info("logged evaluate/%s to %s", cfg.split, trained.run_dir / "tensorboard")
    console.print(results_table(metrics, data.name))
    console.print(f"wrote [bold]{path}[/bold]")
    return metrics


def data_kind(data: DataBundle, split: Split) -> str:
    """8-bit (uint8 pixels as stored), binary (8-bit, every pixel of the split, held in memory, 0 or
    255), binarised (dataset.binarize), or continuous (float values)."""
    if data.binarize != "none":
        return "binarised"
    if not holds_8bit_pixels(data):
        return "continuous"
    binary = split.in_memory and len(split) and bool(((split.images == 0) | (split.images == 255)).all())
    return "binary" if binary else "8-bit"


def what_is_bounded(loss: str, kind: str) -> dict[str, Any]:
    """What the model's neg_elbo and iwae_nll are upper bounds of, in words, and the keys of the numbers
    that compare with published ones on the same data (bits/dim on 8-bit images, nats on binary ones).
    A density of continuous values is not a probability of discrete data: its -log can be negative and
    shifts with the units, so it compares with nothing; the discretised Gaussian's numbers do."""
    own = ["neg_elbo", "iwae_nll", "elbo_bits_per_dim", "iwae_bits_per_dim"]
    pixels = kind in ("8-bit", "binary")
    if loss == "logistic" and pixels:
        bound = "upper bounds on -log p(x) of the 8-bit data (the discretised logistic's 256 bins)"
        return {"data": kind, "bound": bound, "comparable": own}
    if loss == "bernoulli" and kind in ("binary", "binarised"):
        bound = (
            f"upper bounds on -log p(x) of the {kind} data (Bernoulli is a discrete likelihood of it): they "
            f"compare with papers' nats on the same {kind} data, not with 8-bit bits/dim"
        )
        return {"data": kind, "bound": bound, "comparable": own}
    if loss == "gaussian" and pixels:
        bound = (
            "-log of a Gaussian density at the pixel values: not a bound on -log p(x) of the 8-bit data, not "
            "comparable; the discrete_* numbers are (the discretised Gaussian)"
        )
        return {"data": kind, "bound": bound, "comparable": [f"discrete_{key}" for key in own]}
    if loss == "bernoulli":
        bound = (
            f"BCE on {kind} values (not all 0 or 1): not normalised, not a bound on -log p(x), not comparable"
        )
    elif loss == "gaussian":
        bound = f"upper bounds on -log of a Gaussian density of the {kind} values: not comparable with papers"
    else:
        bound = f"loss={loss} on {kind} data: not a bound on -log p(x) of the data as stored, not comparable"
    return {"data": kind, "bound": bound, "comparable": []}


def probe(
    trained: Trained, data: DataBundle, split: Split, mu: torch.Tensor, cfg: DictConfig
) -> dict[str, Any]:
    """Logistic regression on mu: fitted on (at most probe_train_size of) the train split, scored here."""
    train = data.train
    if split.labels is None or train.labels is None:
        log.info("no labels in %s: the logistic-regression probe is skipped", data.name)
        return {}
    if cfg.split == "train":
        train_mu, train_labels = mu, split.labels
    else:
        if len(train) > cfg.probe_train_size:
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
            train = train.subset(pick[: cfg.probe_train_size].sort().values)
        train_mu = encode_split(trained.model, train, data.binarize, cfg.seed, cfg.batch_size)
        train_labels = train.labels
    accuracy = logistic_probe(train_mu, train_labels, mu, split.labels)
    return {"probe_accuracy": accuracy, "probe_train_examples": len(train_mu)}


def results_table(metrics: dict[str, Any], dataset: str) -> Table:
    m = metrics
    table = Table(title=f"{dataset} {m['split']}: {m['num_examples']} examples, nats per example")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("-ELBO", f"{fmt(m['neg_elbo'])}  ({m['elbo_bits_per_dim']:.4f} bits/dim)")
    table.add_row("  reconstruction", fmt(m["recon"]))
    table.add_row(
        "  KL" if m["kl_per_dim_means"] == KL_PER_DIM_CLOSED_FORM else "  KL (sampled)", fmt(m["kl"])
    )
    table.add_row(
        f"-log p(x), IWAE k={m['iwae_k']}", f"{fmt(m['iwae_nll'])}  ({m['iwae_bits_per_dim']:.4f} bits/dim)"
    )
    table.add_row("  these bound", m["bound"])
    if "discrete_neg_elbo" in m:
        table.add_row(
            "-ELBO, discretised (8-bit data)",
            f"{fmt(m['discrete_neg_elbo'])}  ({m['discrete_elbo_bits_per_dim']:.4f} bits/dim)",
        )
        table.add_row(
            f"-log p(x), IWAE k={m['iwae_k']}, discretised",
            f"{fmt(m['discrete_iwae_nll'])}  ({m['discrete_iwae_bits_per_dim']:.4f} bits/dim)",
        )
    table.add_row("compare with papers", ", ".join(m["comparable"]) or "none of these")
    table.add_row("active units", f"{m['active_units']} / {m['latent_dim']}")
    top = sorted(enumerate(m["kl_per_dim"]), key=lambda t: -t[1])[:5]
    what = "" if m["kl_per_dim_means"] == KL_PER_DIM_CLOSED_FORM else ", the encoder's Gaussian to N(0, 1)"
    table.add_row(f"KL per dimension (top 5{what})", ", ".join(f"z{j} {v:.2f}" for j, v in top))
    if m.get("mig") is not None:
        table.add_row("MIG (disentanglement)", f"{m['mig']:.4f}")
    if m["probe_accuracy"] is not None:
        table.add_row(
            "probe accuracy", f"{m['probe_accuracy']:.4f}  (fit on {m['probe_train_examples']} train)"
        )
    table.add_row("wall time", f"{m['wall_time_s']:.1f} s")
    return table
