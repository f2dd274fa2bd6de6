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
    iwae_bound      which bound iwae_nll is: "exact discrete" for posterior=categorical (one-hot draws
                    z ~ Cat(softmax(logits)), log q(z|x) = the drawn classes' log-probabilities, log p(z) =
                    -N log K: the exact bound of the discrete model, never its Gumbel-softmax relaxation),
                    else "continuous" (the posterior's draws and log densities)
    probe_accuracy  a logistic regression on mu, fitted on the train split, scored on this one (labelled data)
    mig             the Mutual Information Gap between mu and the ground-truth factors (Chen et al. 2018),
                    on datasets that have them (synthetic): 0 entangled .. 1 one dimension per factor
    dci_*           DCI (Eastwood & Williams 2018) of mu against those factors, from a random forest per
                    factor fitted on 80% of the split: dci_disentanglement (1: each dimension serves one
                    factor), dci_completeness (1: each factor lives in one dimension), dci_informativeness
                    (the forests' mean accuracy on the other 20%); null on fewer than 100 examples
    recon_error     sum over the data's dimensions of (x - E[x|z = mu(x)])^2 per example, in squared input
                    units (not nats): the model's squared reconstruction error
    pca_recon_error the same error of PCA with latent_dim components fitted on the train split (at most
                    pca_train_size examples; pca=false skips it): the linear autoencoder's optimum, the
                    baseline a nonlinear model should beat (vae_cli/baselines.py)

model=vqvae (deterministic codes z_q, q(z_q|x) = 1, and a code prior p(z_q) fitted in stage two): recon is
-log p(x|z_q), kl = -log p(z_q), neg_elbo = iwae_nll = their sum (every draw of a point mass is the same, so
IWAE_k = ELBO), the bound -log p(x) <= -log p(x|z_q) - log p(z_q); prior_nll and prior_bits_per_code are
-log p(z_q) in nats and in bits per code, kl_per_dim its share at each grid position, codebook_usage the
share of the K entries that some example of the split uses, perplexity exp(H) of the code counts.

A plain autoencoder (objective=ae: deterministic codes, no KL, no prior) bounds nothing: its neg_elbo, kl,
iwae_nll, their bits per dimension and kl_per_dim are null, `does_not_apply` lists them and `bound` says
why; recon is -log p(x|z = code(x)) and recon_error the squared error of that reconstruction.

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
from vae_cli.baselines import fit_pca, pca_recon_errors, pca_skip_reason, training_inputs
from vae_cli.commands.common import load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_evaluate_config
from vae_cli.config.objectives import not_a_bound
from vae_cli.console import console, fmt
from vae_cli.data import DataBundle
from vae_cli.data.base import Split, holds_8bit_pixels
from vae_cli.estimators import encode_split, estimate_split, reconstruct_split
from vae_cli.io import write_json
from vae_cli.metrics import (
    ACTIVE_THRESHOLD,
    active_units,
    bits_per_dim,
    latent_variances,
    logistic_probe,
    split_dci,
    split_mig,
)
from vae_cli.models import VAE
from vae_cli.models.conditional import check_split_labels
from vae_cli.models.vqvae import is_vqvae, perplexity
from vae_cli.objectives import draws_no_codes

log = logging.getLogger("vae")

#: `split_dci`'s numbers, null in metrics_<split>.json where the split has no factors or too few codes
DCI_KEYS = ("dci_disentanglement", "dci_completeness", "dci_informativeness")

KL_PER_DIM_CLOSED_FORM = "KL(q(z_j|x) || N(0, 1)) averaged over x, in closed form; it sums to kl"
KL_PER_DIM_OF_THE_GAUSSIAN = (
    "KL(q0(z_j|x) || N(0, 1)) of the encoder's Gaussian (before any flow), averaged over x, in closed form: "
    "which dimensions carry information; it does not sum to kl, estimated on the draws (the prior or the "
    "posterior does not factorise over dimensions)"
)


KL_PER_DIM_CATEGORICAL = (
    "KL(q(z_j|x) || uniform) of each categorical variable j, in closed form, averaged over x and split "
    "equally over its K code values: it sums to the exact KL, of which kl is the estimate on the draws"
)

KL_PER_DIM_CODES = (
    "-log p(z_i | z_<i) of model=vqvae's code at grid position i (raster order) under its code prior, averaged "
    "over x: it sums to kl = -log p(z_q)"
)
VQVAE_PRIOR = "code prior (an autoregressive transformer over the code grid, stage two)"
VQVAE_POSTERIOR = "deterministic (the nearest codebook entries, q(z_q|x) = 1)"


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_evaluate_config)
    device = trained.device
    data = load_data(trained, cfg.data_dir)
    split = pick_split(data, cfg.split, cfg.max_examples)
    check_split_labels(trained.model, split, f"the {cfg.split} split of {data.name}")  # model.conditional
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
    autoencoder = draws_no_codes(trained.config)  # objective=ae: no KL, no bound on log p(x)
    discrete = trained.model.likelihood.on_8bit_data() if gaussian_on_pixels and not autoencoder else None
    if autoencoder:
        per_example = reconstruct_split(
            trained.model,
            split,
            binarize=data.binarize,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            in_memory=trained.dataset.in_memory,
        )
    else:
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
            recon_error=True,
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
        **{
            key: float(per_example[key].mean())
            for key in ("neg_elbo", "recon", "kl", "iwae_nll", "recon_error")
            if key in per_example
        },
    }
    if autoencoder:
        metrics.update(autoencoder_bounds(kind))
    else:
        metrics["elbo_bits_per_dim"] = bits_per_dim(metrics["neg_elbo"], num_dims)
        metrics["iwae_bits_per_dim"] = bits_per_dim(metrics["iwae_nll"], num_dims)
        metrics.update(what_is_bounded(loss, kind))
        if caveat := not_a_bound(trained.config.objective.name):  # objective=mmd: its loss is no bound
            metrics["bound"], metrics["comparable"] = f"{caveat}; {metrics['bound']}", []
    if is_vqvae(trained.model):
        metrics.update(vqvae_metrics(trained.model, per_example, metrics["bound"]))
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
    if is_vqvae(trained.model):
        metrics["prior"], metrics["posterior"] = VQVAE_PRIOR, VQVAE_POSTERIOR
    metrics["iwae_bound"] = None if autoencoder else iwae_bound(trained.model)
    if autoencoder:
        metrics["kl_per_dim"], metrics["kl_per_dim_means"] = None, "does not apply: objective=ae has no KL"
    else:
        metrics["kl_per_dim"] = per_example["kl_per_dim"].mean(0).tolist()
        metrics["kl_per_dim_means"] = kl_per_dim_means(trained.model)
    metrics["mu_variance_per_dim"] = latent_variances(mu).tolist()
    metrics["mig"] = split_mig(mu, split.factors)
    metrics.update(split_dci(mu, split.factors) or dict.fromkeys(DCI_KEYS))
    metrics["pca_recon_error"] = None
    if cfg.pca:
        metrics.update(pca_metrics(trained, data, split, cfg))
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
            "recon_error",
            "kl",
            "iwae_nll",
            "iwae_bits_per_dim",
            "discrete_iwae_bits_per_dim",
            "prior_bits_per_code",
            "codebook_usage",
            "active_units",
            "probe_accuracy",
            "mig",
            *DCI_KEYS,
            "pca_recon_error",
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


def iwae_bound(model: VAE) -> str:
    """Which bound iwae_nll is: "exact discrete" for one-hot codes (posterior=categorical: the estimators
    draw them exactly, outside training's relaxation), "deterministic" for model=vqvae's (IWAE_k = ELBO),
    else "continuous"."""
    if is_vqvae(model):
        return "deterministic"
    return "exact discrete" if model.posterior.discrete else "continuous"


def kl_per_dim_means(model: VAE) -> str:
    """What metrics' kl_per_dim is for this model."""
    if is_vqvae(model):
        return KL_PER_DIM_CODES
    if model.posterior.discrete:
        return KL_PER_DIM_CATEGORICAL
    return KL_PER_DIM_CLOSED_FORM if model.closed_form else KL_PER_DIM_OF_THE_GAUSSIAN


def vqvae_metrics(model: Any, per_example: dict[str, torch.Tensor], bound: str) -> dict[str, Any]:
    """model=vqvae's own numbers: -log p(z_q) in nats and bits per code, how much of the codebook the split
    uses (and the perplexity of its code counts), and what its bound is."""
    positions, size = model.positions, model.quantizer.size
    counts = torch.bincount(per_example["indices"].flatten(), minlength=size)
    prior_nll = float(per_example["kl"].mean())
    fitted = "uniform: untrained, log K per code" if model.code_prior.is_uniform() else "fitted in stage two"
    return {
        "prior_nll": prior_nll,
        "prior_bits_per_code": prior_nll / (positions * math.log(2)),
        "codes_per_example": positions,
        "codebook_size": size,
        "codes_used": int((counts > 0).sum()),
        "codebook_usage": float((counts > 0).float().mean()),
        "perplexity": float(perplexity(counts)),
        "code_prior": fitted,
        "bound": (
            f"{bound}; model=vqvae's posterior is deterministic (q(z_q|x) = 1), so -log p(x) <= -log p(x|z_q) "
            f"- log p(z_q) = neg_elbo, and iwae_nll equals it"
        ),
    }


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


def autoencoder_bounds(kind: str) -> dict[str, Any]:
    """A plain autoencoder's (objective=ae) numbers that do not apply, and why: its codes are
    deterministic, with no KL and no prior, so nothing it computes bounds log p(x)."""
    missing = ["neg_elbo", "kl", "iwae_nll", "elbo_bits_per_dim", "iwae_bits_per_dim"]
    bound = (
        "objective=ae (a plain autoencoder: deterministic codes, no KL, no prior) bounds nothing: neg_elbo, "
        "kl and iwae_nll do not apply; recon is -log p(x|z = code(x)) and recon_error its squared error"
    )
    return {
        **dict.fromkeys(missing),
        "does_not_apply": missing,
        "data": kind,
        "bound": bound,
        "comparable": [],
    }


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


def pca_metrics(trained: Trained, data: DataBundle, split: Split, cfg: DictConfig) -> dict[str, Any]:
    """The PCA baseline at latent_dim components (vae_cli/baselines.py), fitted on at most pca_train_size
    training examples, and its squared error on the evaluated split; skipped (with its reason) where PCA
    has fewer directions than latent_dim."""
    k = trained.model.latent_dim
    fitted_on = min(len(data.train), cfg.pca_train_size)
    reason = pca_skip_reason(k, fitted_on, math.prod(trained.model.image_shape))
    if reason is not None:
        log.info("the PCA baseline is skipped: %s", reason)
        return {"pca_skipped": reason}
    log.info("fitting the PCA baseline (%d components) on %d training examples", k, fitted_on)
    baseline = fit_pca(training_inputs(data.train, data.binarize, cfg.pca_train_size, cfg.seed), k, cfg.seed)
    errors = pca_recon_errors(
        baseline,
        split,
        binarize=data.binarize,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        device=trained.device,
        in_memory=trained.dataset.in_memory,
    )
    return {
        "pca_recon_error": float(errors.mean()),
        "pca_components": k,
        "pca_train_examples": baseline.train_examples,
        "pca_explained_variance": baseline.explained_variance,
    }


def pca_row(m: dict[str, Any]) -> tuple[str, str] | None:
    """The table's comparison of the model's squared error with PCA's, or None without either."""
    if m.get("recon_error") is None:
        return None
    if m.get("pca_recon_error") is not None:
        return (
            "squared error: model vs PCA",
            f"{fmt(m['recon_error'])} vs {fmt(m['pca_recon_error'])}  "
            f"({m['pca_components']} components, fit on {m['pca_train_examples']} train)",
        )
    if m.get("pca_skipped"):
        return "squared error: model (PCA skipped)", f"{fmt(m['recon_error'])}  ({m['pca_skipped']})"
    return "squared error of E[x|z=mu]", fmt(m["recon_error"])


def results_table(metrics: dict[str, Any], dataset: str) -> Table:
    m = metrics
    table = Table(title=f"{dataset} {m['split']}: {m['num_examples']} examples, nats per example")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if m.get("does_not_apply"):  # objective=ae
        table.add_row("-ELBO, -log p(x)", "do not apply")
        table.add_row("reconstruction, -log p(x|z)", fmt(m["recon"]))
        table.add_row("reconstruction error (squared)", fmt(m["recon_error"]))
        table.add_row("  why", m["bound"])
    else:
        table.add_row("-ELBO", f"{fmt(m['neg_elbo'])}  ({m['elbo_bits_per_dim']:.4f} bits/dim)")
        table.add_row("  reconstruction", fmt(m["recon"]))
        kl_label = {KL_PER_DIM_CLOSED_FORM: "  KL", KL_PER_DIM_CODES: "  KL = -log p(z_q), the code prior"}
        table.add_row(kl_label.get(m["kl_per_dim_means"], "  KL (sampled)"), fmt(m["kl"]))
        if m.get("prior_bits_per_code") is not None:
            bits = f"{m['prior_bits_per_code']:.4f} ({m['code_prior']})"
            table.add_row("  code prior, bits per code", bits)
        table.add_row(
            f"-log p(x), IWAE k={m['iwae_k']}",
            f"{fmt(m['iwae_nll'])}  ({m['iwae_bits_per_dim']:.4f} bits/dim)",
        )
        table.add_row("  these bound", m["bound"])
        if m.get("iwae_bound") == "exact discrete":
            table.add_row("  IWAE draws", "one-hot codes: the exact bound of the discrete model")
        if m.get("iwae_bound") == "deterministic":
            table.add_row("  IWAE draws", "one code per image (q(z_q|x) = 1): IWAE_k = ELBO")
    if m.get("codebook_usage") is not None:
        table.add_row(
            "codebook usage",
            f"{m['codes_used']} / {m['codebook_size']} entries ({100 * m['codebook_usage']:.1f}%), "
            f"perplexity {m['perplexity']:.1f}",
        )
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
    if m["kl_per_dim"] is not None:
        top = sorted(enumerate(m["kl_per_dim"]), key=lambda t: -t[1])[:5]
        what = {
            KL_PER_DIM_CLOSED_FORM: "",
            KL_PER_DIM_CATEGORICAL: ", each variable's KL over its K values",
            KL_PER_DIM_CODES: ", -log p(z_i | z_<i) per grid position",
        }.get(m["kl_per_dim_means"], ", the encoder's Gaussian to N(0, 1)")
        table.add_row(f"KL per dimension (top 5{what})", ", ".join(f"z{j} {v:.2f}" for j, v in top))
    if (row := pca_row(m)) is not None:
        table.add_row(*row)
    if m.get("mig") is not None:
        table.add_row("MIG (disentanglement)", f"{m['mig']:.4f}")
    if m.get("dci_disentanglement") is not None:
        table.add_row(
            "DCI disentanglement, completeness, informativeness",
            ", ".join(f"{m[key]:.4f}" for key in DCI_KEYS),
        )
    if m["probe_accuracy"] is not None:
        table.add_row(
            "probe accuracy", f"{m['probe_accuracy']:.4f}  (fit on {m['probe_train_examples']} train)"
        )
    table.add_row("wall time", f"{m['wall_time_s']:.1f} s")
    return table
