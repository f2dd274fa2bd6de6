"""`vae sample`: images from a trained model, as a PNG grid (and optionally the raw tensor); for a model
of vectors (tabular data), a CSV and a .npy of them in the data's units instead (vae_cli/tabular.py).

mean         prior codes z ~ p(z) (N(0, temperature^2 I) for prior=standard; a mixture prior's component, then
             its Gaussian spread by temperature), shown as the likelihood's mean E[x|z]; sampler=gmm draws
             the codes instead from a Gaussian mixture fitted to the training split's posterior means
             (vae_cli/code_mixture.py: fitted once, kept in the run folder)
draw         the same codes, then pixels drawn from p(x|z)
traverse     one row per active latent dimension (highest average KL first; show_inactive=true adds
             the inactive ones): that dimension swept over `range` in `steps` columns, the others held
             at the base code (zero, or an encoded image); labelled with each row's dimension and KL and
             each column's z
interpolate  `pairs` rows, each from one encoded image's mean code to another's (linear or slerp)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vae_cli.api import Trained
from vae_cli.code_mixture import CodeMixture, run_code_mixture
from vae_cli.commands.common import first_images, load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import validate_sample_config
from vae_cli.console import console
from vae_cli.data import prepare_batch
from vae_cli.errors import DataError
from vae_cli.io import write_json
from vae_cli.metrics import ACTIVE_THRESHOLD, latent_variances
from vae_cli.models import VAE
from vae_cli.pictures import grid_picture, labelled_picture, save_picture
from vae_cli.tabular import feature_names, in_data_units, is_vectors, write_vectors

log = logging.getLogger("vae")

#: test images encoded to rank the latent dimensions by their average KL
KL_EXAMPLES = 1000
#: what a traversal's per-dimension KL is when the prior or the posterior does not factorise
KL_OF_THE_GAUSSIAN = (
    "KL(q0(z_j|x) || N(0, 1)) of the encoder's Gaussian, in closed form: which dimensions carry "
    "information, not a split of the KL to this model's prior"
)
#: codes decoded per pass: a full device without holding every image's decoder activations at once
DECODE_BATCH = 4096


def sample(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_sample_config)
    model = trained.model
    generator = trained.generator(cfg.seed)
    info: dict[str, Any] = {"checkpoint": str(trained.path), "mode": cfg.mode, "seed": cfg.seed}
    labels: dict[str, Any] = {}  # the traversal's words on its picture
    columns: dict[str, list] = {}  # vectors: the CSV's columns before the features (dim and z, ...)

    info["sampler"] = cfg.sampler
    mixture: CodeMixture | None = None
    if cfg.sampler == "gmm" and cfg.mode in ("mean", "draw"):
        mixture, kept = run_code_mixture(trained, cfg.components, cfg.data_dir)
        info["code_mixture"] = str(kept) if kept else None
    elif cfg.sampler == "gmm":
        log.info("sampler=gmm: mode=%s draws no codes from the prior; the sampler is not used", cfg.mode)
    if cfg.mode in ("mean", "draw"):
        name, nrow = "samples", cfg.nrow
        images = prior_samples(model, cfg.n, cfg.temperature, cfg.mode == "draw", generator, mixture)
    elif cfg.mode == "traverse":
        name, nrow = "traverse", cfg.steps
        x = encoded_inputs(trained, cfg, KL_EXAMPLES, generator)
        with torch.no_grad():
            mu, logvar = model.encode(x)
            code = model.posterior.mean((mu, logvar))
        kl = model.kl_per_dim(mu, logvar).mean(0)
        dims, hidden = traversal_dims(kl, latent_variances(code), cfg.dims, cfg.show_inactive)
        base = code[0] if cfg.base == "image" else torch.zeros_like(code[0])
        values = torch.linspace(*cfg.range, cfg.steps, device=trained.device)
        images = traversal(model, base, dims, values)
        info["rows"] = [{"dim": int(d), "kl": float(kl[d])} for d in dims]
        info["columns"] = [float(v) for v in values]
        info["hidden_inactive"] = hidden
        if not model.closed_form:
            info["kl_means"] = KL_OF_THE_GAUSSIAN
        labels = traversal_labels(info, cfg, len(kl))
        columns = {
            "dim": [int(d) for d in dims for _ in values],
            "z": [f"{float(v):.6g}" for _ in dims for v in values],
        }
        log.info("rows: latent dimensions %s (average KL %s nats)", dims.tolist(), _nats(kl[dims]))
        if hidden:
            log.info("%s (show_inactive=true shows them)", _hidden_text(hidden))
    else:
        name, nrow = "interpolate", cfg.steps
        x = encoded_inputs(trained, cfg, 2 * cfg.pairs, generator)
        if len(x) < 2:
            raise DataError(f"mode=interpolate needs at least 2 images; the {cfg.split} split has {len(x)}")
        with torch.no_grad():
            mu = model.code(x)
        pairs = len(mu) // 2
        images = interpolation(model, mu[0 : 2 * pairs : 2], mu[1 : 2 * pairs : 2], cfg.steps, cfg.method)
        columns = {
            "pair": [p for p in range(pairs) for _ in range(cfg.steps)],
            "t": [f"{t:.6g}" for _ in range(pairs) for t in torch.linspace(0, 1, cfg.steps).tolist()],
        }

    images = images.float().cpu()
    vectors = is_vectors(model.image_shape)
    if vectors:  # tabular data: numbers in the data's units, not a picture of one-pixel rows
        names = feature_names(trained, images.shape[-1], cfg.data_dir)
        written = write_vectors(
            out.path(f"{name}.csv"), out.path(f"{name}.npy"), in_data_units(trained, images), names, columns
        )
    else:
        written = [out.path(f"{name}.png")]
        if labels:
            picture = labelled_picture(images, nrow, cfg.scale, **labels)
        else:
            picture = grid_picture(images, nrow, cfg.scale)
        save_picture(picture, written[0])
    if cfg.save_tensor:  # as decoded, unclamped (a Gaussian's means may leave [0, 1])
        written.append(out.path(f"{name}.pt"))
        torch.save(images, written[-1])
    if cfg.mode == "traverse":
        written.append(out.path("traverse.json"))
        write_json(written[-1], info)
    if cfg.log_to_run and vectors:
        log.info("log_to_run=true: vectors are not logged as TensorBoard images")
    elif cfg.log_to_run and (tb := run_tensorboard(trained)):
        tb.image_grid(f"sample/{cfg.mode}", images, trained.step, nrow=nrow)
        tb.close()
        log.info("logged sample/%s to %s", cfg.mode, trained.run_dir / "tensorboard")
    for path in written:
        console.print(f"wrote [bold]{path}[/bold]")
    return {**info, "files": [str(p) for p in written]}


def traversal_dims(
    kl: torch.Tensor, variances: torch.Tensor, limit: int, show_inactive: bool
) -> tuple[torch.Tensor, list[int]]:
    """(the dimensions a traversal shows, highest average KL first; the inactive ones it hides).

    A dimension is inactive when its posterior mean hardly moves with x (Var_x(mu) <= ACTIVE_THRESHOLD,
    as active units are counted): setting it changes nothing, so its row would be a row of one image.
    When no dimension is active, every one is shown."""
    order = kl.argsort(descending=True)
    active = variances.to(order.device)[order] > ACTIVE_THRESHOLD
    hidden: list[int] = []
    if not show_inactive:
        if active.any():
            hidden = order[~active].tolist()
            order = order[active]
        else:
            log.warning("no latent dimension is active (Var_x(mu) <= %g): showing them all", ACTIVE_THRESHOLD)
    return order[: limit or None], hidden


def traversal_labels(info: dict[str, Any], cfg: DictConfig, latent_dim: int) -> dict[str, Any]:
    """What the traversal picture says: rows are dimensions (with their KL), columns the z values."""
    base = "a zero code" if cfg.base == "zero" else f"the first {cfg.split} image's code"
    title = [f"traversal from {base}: row = latent dimension (average KL, nats), column = its value z"]
    shown = f"{len(info['rows'])} of {latent_dim} dimensions shown"
    if info["hidden_inactive"]:
        shown += f"; {_hidden_text(info['hidden_inactive'])} (show_inactive=true shows them)"
    title.append(shown)
    return {
        "title": title,
        "row_labels": [f"z{r['dim']}  KL {r['kl']:.2f}" for r in info["rows"]],
        "col_labels": [f"{v:.3g}" for v in info["columns"]],
    }


def _hidden_text(hidden: list[int]) -> str:
    return f"{len(hidden)} inactive dimension(s) hidden (Var_x(mu) <= {ACTIVE_THRESHOLD:g})"


@torch.no_grad()
def prior_samples(
    model: VAE,
    n: int,
    temperature: float,
    draw: bool,
    generator: torch.Generator,
    mixture: CodeMixture | None = None,
) -> torch.Tensor:
    """n images decoded from z ~ p(z), the model's prior (N(0, temperature^2 I) for the standard one; a
    mixture's components each spread by `temperature`), or from z ~ `mixture` (sampler=gmm, its
    Gaussians spread alike): E[x|z], or a draw x ~ p(x|z) when `draw`."""
    if mixture is None:
        z = model.prior_codes(n, temperature, generator)
    else:
        z = mixture.sample(n, generator, temperature).to(next(model.parameters()).device)
    images = []
    for codes in z.split(DECODE_BATCH):  # thousands of samples (e.g. for FID) in device-sized passes
        params = model.decode(codes)
        images.append(model.likelihood.sample(params, generator) if draw else model.likelihood.mean(params))
    return torch.cat(images)


@torch.no_grad()
def traversal(model: VAE, base: torch.Tensor, dims: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Row r sets latent dimension dims[r] of `base` to each of `values` in turn: (len(dims) * steps) images."""
    rows, steps = len(dims), len(values)
    z = base.expand(rows, steps, -1).clone()
    z[
        torch.arange(rows, device=z.device)[:, None],
        torch.arange(steps, device=z.device)[None, :],
        dims[:, None],
    ] = values
    return model.likelihood.mean(model.decode(z.flatten(0, 1)))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (N, d) at fractions t (S,): (N, S, d).

    Falls back to linear where a and b are (nearly) parallel or one of them is zero."""
    a_, b_, t = a[:, None, :], b[:, None, :], t[None, :, None]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)[:, None, None]
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    linear = (1 - t) * a_ + t * b_
    spherical = (torch.sin((1 - t) * omega) * a_ + torch.sin(t * omega) * b_) / sin.clamp_min(1e-6)
    return torch.where(sin > 1e-4, spherical, linear)


@torch.no_grad()
def interpolation(model: VAE, a: torch.Tensor, b: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    """Row i goes from code a[i] to code b[i] in `steps` images (both ends included)."""
    t = torch.linspace(0, 1, steps, device=a.device)
    if method == "slerp":
        z = slerp(a, b, t)
    else:
        z = (1 - t[None, :, None]) * a[:, None, :] + t[None, :, None] * b[:, None, :]
    return model.likelihood.mean(model.decode(z.flatten(0, 1)))


def encoded_inputs(trained: Trained, cfg: DictConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """The first n images of the split, as the model sees them (binarised if it was trained so)."""
    data = load_data(trained, cfg.data_dir)
    images = first_images(pick_split(data, cfg.split), n)
    return prepare_batch(images.to(trained.device), data.binarize, generator)


def _nats(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values.tolist()) + "]"
