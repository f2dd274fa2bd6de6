"""`vae embed`: where a split's examples lie in the latent space.

    latents.npz  index (N,): each example's position in the split; mu (N, d): the posterior's mean code
                 (`VAE.code`: mu(x) for the Gaussian posterior); logvar (N, d): the encoder's Gaussian's
                 log-variance; labels (N,) and label_names, factors (N, F) and factor_names where the data
                 has them (dataset=synthetic's ground-truth factors); names (N,) where the examples have
                 them (files, rows); scatter (N, 2) and scatter_axes: scatter.png's coordinates
    latents.csv  the same, one row per example: index, [name], [label, label_name], [one column per
                 factor], mu_0.., logvar_0.., scatter_x, scatter_y
    scatter.png  the codes themselves when latent_dim = 2, else a 2-D projection of them: method=pca
                 (scikit-learn's PCA, the plane of the codes' largest variance) or method=tsne (scikit-learn's
                 t-SNE, van der Maaten & Hinton 2008: neighbours kept near, distances between clusters not
                 meaningful); coloured by label, with a legend

`n` (5000) examples at most, a seeded random subset of the split kept in the split's order; binarised
data is binarised as `vae evaluate`'s probe sees it (vae_cli/estimators.py's encode_split).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vae_cli.commands.common import load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_embed_config
from vae_cli.console import console
from vae_cli.data import DataBundle
from vae_cli.data.base import Split
from vae_cli.errors import DataError
from vae_cli.estimators import encode_posterior
from vae_cli.io import write_atomically, write_text
from vae_cli.models.conditional import check_split_labels

log = logging.getLogger("vae")

#: classes shown each in its own colour with a legend entry; more get a colour scale instead
LEGEND_CLASSES = 20
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE"}


def embed(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_embed_config)
    data = load_data(trained, cfg.data_dir)
    split = pick_split(data, cfg.split)
    index = pick_examples(len(split), cfg.n, cfg.seed)
    split = split.subset(index)
    check_split_labels(trained.model, split, f"the {cfg.split} split of {data.name}")  # model.conditional
    log.info("encoding %d %s examples of %s on %s", len(index), cfg.split, data.name, trained.device)
    mu, logvar = encode_posterior(trained.model, split, data.binarize, cfg.seed, cfg.batch_size)
    latent_dim = trained.model.latent_dim
    if latent_dim <= 2 and cfg.method != "pca":
        log.info(
            "latent_dim=%d: the scatter shows the codes themselves; method=%s is not used",
            latent_dim,
            cfg.method,
        )
    xy, axes = project(mu.numpy(), cfg.method, cfg.seed, cfg.perplexity)

    columns = latent_columns(index, mu, logvar, split, data, xy, axes)
    written = [out.path("latents.npz"), out.path("latents.csv"), out.path("scatter.png")]
    write_atomically(written[0], lambda f: np.savez(f, **columns))
    write_text(written[1], csv_text(columns, latent_dim))
    title = f"{data.name} {cfg.split}: {len(index)} posterior mean codes" + (
        f", {METHOD_NAMES[cfg.method]} of {latent_dim} dimensions" if latent_dim > 2 else ""
    )
    draw_scatter(xy, split.labels, data.label_names, axes, title, written[2])
    if cfg.log_to_run and (tb := run_tensorboard(trained)):
        log_scatter(tb, written[2], f"embed/{cfg.split}", trained.step)
        log.info("logged embed/%s to %s", cfg.split, trained.run_dir / "tensorboard")
    for path in written:
        console.print(f"wrote [bold]{path}[/bold]")
    return {
        "checkpoint": str(trained.path),
        "split": cfg.split,
        "num_examples": len(index),
        "latent_dim": latent_dim,
        "scatter_axes": list(axes),
        "files": [str(p) for p in written],
    }


def pick_examples(total: int, n: int, seed: int) -> torch.Tensor:
    """The positions of at most n examples of `total` (all when n is 0 or covers them), a seeded random
    subset in increasing order."""
    if n == 0 or n >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def project(
    codes: np.ndarray, method: str, seed: int, perplexity: float
) -> tuple[np.ndarray, tuple[str, str]]:
    """The scatter's (N, 2) coordinates and its axes' names: the codes themselves for d <= 2 (d = 1 on a
    line at 0), else their PCA or t-SNE projection."""
    n, d = codes.shape
    if d == 2:
        return codes.astype(np.float32), ("z0", "z1")
    if d == 1:
        return np.concatenate([codes, np.zeros_like(codes)], 1).astype(np.float32), ("z0", "")
    if n < 3:
        raise DataError(
            f"a 2-D projection of {d}-D codes needs at least 3 examples; got {n}: raise n or pick a larger split"
        )
    if method == "tsne":
        return tsne(codes, seed, perplexity), ("t-SNE 1", "t-SNE 2")
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed).fit(codes.astype(np.float64))
    share = pca.explained_variance_ratio_
    names = tuple(
        f"PC{k + 1} ({100 * s:.0f}% of the variance)" if math.isfinite(s) else f"PC{k + 1}"
        for k, s in enumerate(share)
    )
    return pca.transform(codes.astype(np.float64)).astype(np.float32), names  # type: ignore[return-value]


def tsne(codes: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
    """scikit-learn's t-SNE (Barnes-Hut, PCA initialisation) of the codes, (N, 2)."""
    from sklearn.manifold import TSNE

    n = len(codes)
    if perplexity >= n:
        raise DataError(
            f"method=tsne: perplexity={perplexity:g} must be below the number of examples ({n}): lower it, "
            f"e.g. perplexity={max(1, n // 4)}, or use method=pca"
        )
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return embedding.fit_transform(codes.astype(np.float32)).astype(np.float32)


def latent_columns(
    index: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    split: Split,
    data: DataBundle,
    xy: np.ndarray,
    axes: tuple[str, str],
) -> dict[str, np.ndarray]:
    """latents.npz's arrays (see the module's docstring); the CSV is written from the same."""
    columns: dict[str, np.ndarray] = {"index": index.numpy().astype(np.int64)}
    if split.names is not None:
        columns["names"] = np.asarray(split.names, dtype=str)
    if split.labels is not None:
        columns["labels"] = split.labels.numpy().astype(np.int64)
        if data.label_names:
            columns["label_names"] = np.asarray(data.label_names, dtype=str)
    if split.factors is not None:
        columns["factors"] = split.factors.float().numpy()
        count = columns["factors"].shape[1]
        names = (
            data.factor_names if len(data.factor_names) == count else [f"factor_{k}" for k in range(count)]
        )
        columns["factor_names"] = np.asarray(names, dtype=str)
    columns["mu"] = mu.numpy().astype(np.float32)
    columns["logvar"] = logvar.numpy().astype(np.float32)
    columns["scatter"] = xy.astype(np.float32)
    columns["scatter_axes"] = np.asarray(axes, dtype=str)
    return columns


def csv_text(columns: dict[str, np.ndarray], latent_dim: int) -> str:
    """latents.csv: one row per example."""
    header = ["index"]
    parts: list[np.ndarray | list] = [columns["index"][:, None]]
    if "names" in columns:
        header.append("name")
        parts.append(columns["names"][:, None])
    if "labels" in columns:
        header.append("label")
        parts.append(columns["labels"][:, None])
        if "label_names" in columns:
            names = columns["label_names"]
            header.append("label_name")
            parts.append(
                np.asarray([names[k] if 0 <= k < len(names) else "" for k in columns["labels"]])[:, None]
            )
    if "factors" in columns:
        header += [str(name) for name in columns["factor_names"]]
        parts.append(columns["factors"])
    header += [f"mu_{k}" for k in range(latent_dim)] + [f"logvar_{k}" for k in range(latent_dim)]
    header += ["scatter_x", "scatter_y"]
    parts += [columns["mu"], columns["logvar"], columns["scatter"]]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for i in range(len(columns["index"])):
        writer.writerow([_cell(v) for part in parts for v in part[i]])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, np.floating | float):
        return f"{float(value):.7g}"
    return str(value)


def draw_scatter(
    xy: np.ndarray,
    labels: torch.Tensor | None,
    label_names: list[str],
    axes: tuple[str, str],
    title: str,
    path: Path,
) -> None:
    """scatter.png: a point per example, a colour and a legend entry per label (a colour scale beyond
    LEGEND_CLASSES labels; one colour without labels), written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    n = len(xy)
    size = float(np.clip(3000 / max(n, 1), 2, 30))
    fig, ax = plt.subplots(figsize=(7.5, 6))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.7, linewidths=0, color="tab:blue")
        title += " (no labels)"
    else:
        values = labels.numpy()
        classes = np.unique(values)
        if len(classes) <= LEGEND_CLASSES:
            palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            for k, c in enumerate(classes):
                name = label_names[c] if 0 <= c < len(label_names) else str(c)
                pick = values == c
                ax.scatter(
                    xy[pick, 0], xy[pick, 1], s=size, alpha=0.7, linewidths=0, color=palette(k), label=name
                )
            ax.legend(
                title="label",
                loc="center left",
                bbox_to_anchor=(1.02, 0.5),
                markerscale=max(1, 6 / math.sqrt(size)),
            )
        else:
            points = ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.7, linewidths=0, c=values, cmap="viridis")
            fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    if not axes[1]:
        ax.set_yticks([])
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def log_scatter(tb: Any, path: Path, tag: str, step: int) -> None:
    """scatter.png as one image in the training run's TensorBoard."""
    from PIL import Image

    with Image.open(path) as picture:
        pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    tb.image_grid(tag, pixels, step, nrow=1)
    tb.close()
