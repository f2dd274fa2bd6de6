"""`vae sample`: images from a trained model, as a PNG grid (and optionally the raw tensor); for a model
of vectors (tabular data), a CSV and a .npy of them in the data's units instead (vae_cli/tabular.py).

mean         prior codes z ~ p(z) (N(0, temperature^2 I) for prior=standard; a mixture prior's component, then
             its Gaussian spread by temperature), shown as the likelihood's mean E[x|z]; sampler=gmm draws
             the codes instead from a Gaussian mixture fitted to the training split's posterior means
             (vae_cli/code_mixture.py: fitted once, kept in the run folder); sampler=gaussian from one
             diagonal Gaussian fitted to them: a plain autoencoder's (objective=ae) sampler=prior
draw         the same codes, then pixels drawn from p(x|z)
traverse     one row per active latent dimension (highest average KL first; show_inactive=true adds
             the inactive ones): that dimension swept over `range` in `steps` columns, the others held
             at the base code (zero, or an encoded image); labelled with each row's dimension and KL and
             each column's z. posterior=categorical: one row per categorical variable, one column per
             class (`class_traversal`)
interpolate  `pairs` rows, each from one encoded image's mean code to another's (linear or slerp)
manifold     two latent dimensions (a 2-D space's, or dims=[i,j]) on a steps x steps grid over the prior's
             quantiles, the others at the prior's mean (Kingma & Welling 2014, figure 4; vae_cli/manifold.py)
classes      a conditional model (model.conditional=true, vae_cli/models/conditional.py): one row per class
             it was trained on, nrow columns, the same nrow codes z ~ p(z) down each column: each column one
             style, in every class (Sohn et al. 2015)

A conditional model decodes with `label=<class>` where given: mean/draw then draw that class; without it,
mean/draw take the trained classes in turn, traverse and interpolate the encoded images' own (each is
encoded with its own label), manifold the first class.
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
from vae_cli.errors import ConfigError, DataError
from vae_cli.io import write_json
from vae_cli.manifold import PRIOR_DRAWS, manifold_dims, manifold_grid, manifold_labels
from vae_cli.metrics import ACTIVE_THRESHOLD, latent_variances
from vae_cli.models import VAE
from vae_cli.models.conditional import Classes, check_split_labels, classes_of, conditioned
from vae_cli.models.vqvae import is_vqvae
from vae_cli.objectives import draws_no_codes
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
#: the modes that draw codes from the prior, or from sampler=gmm|gaussian's fitted mixture instead
CODE_MODES = ("mean", "draw", "manifold", "classes")
#: what a manifold grid's values are for a prior other than N(0, I) (or a fitted mixture)
MANIFOLD_ESTIMATED = (
    f"estimated: each dimension's marginal quantiles of {PRIOR_DRAWS} seeded draws; the other dimensions at "
    "their mean"
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
    classes = classes_of(model)  # a conditional model's classes, else None
    label = chosen_label(classes, cfg)  # label=<class>'s number (None: as each mode says)
    if label is not None:
        info["label"] = classes.name(label)
    if is_vqvae(model):
        check_vqvae_sampling(model, cfg)

    info["sampler"] = sampler = codes_sampler(trained, cfg.sampler, cfg.mode)
    mixture: CodeMixture | None = None
    if sampler != "prior" and cfg.mode in CODE_MODES:
        diagonal = sampler == "gaussian"
        mixture, kept = run_code_mixture(trained, cfg.components, cfg.data_dir, diagonal=diagonal)
        info["code_mixture"] = str(kept) if kept else None
    elif sampler != "prior":
        log.info(
            "sampler=%s: mode=%s draws no codes from the prior; the sampler is not used", sampler, cfg.mode
        )
    if cfg.mode in ("mean", "draw"):
        name, nrow = "samples", cfg.nrow
        drawn = None if classes is None else drawn_labels(classes, label, cfg.n)
        images = prior_samples(model, cfg.n, cfg.temperature, cfg.mode == "draw", generator, mixture, drawn)
        if drawn is not None:
            columns = {"class": [classes.name(k) for k in drawn.tolist()]}
    elif cfg.mode == "classes":
        name, nrow = "classes", cfg.nrow
        images, labels, columns = class_rows(model, classes, cfg, generator, mixture)
        info["rows"] = [classes.name(k) for k in classes.trained]
    elif cfg.mode == "traverse" and model.posterior.discrete:  # one-hot codes: one class at a time
        name, nrow = "traverse", model.posterior.classes
        x, x_labels = encoded_inputs(trained, cfg, KL_EXAMPLES, generator)
        decode_label = label if x_labels is None or label is not None else int(x_labels[0])
        images, rows, labels, columns = class_traversal(model, x, cfg, x_labels, decode_label)
        info.update(rows)
    elif cfg.mode == "manifold" and model.posterior.discrete:
        raise ConfigError(
            "mode=manifold sweeps two continuous latent dimensions over the prior's quantiles, and "
            "posterior=categorical's codes are one-hot: use mode=traverse (each variable through its classes)"
        )
    elif cfg.mode == "traverse":
        name, nrow = "traverse", cfg.steps
        x, x_labels = encoded_inputs(trained, cfg, KL_EXAMPLES, generator)
        with torch.no_grad(), conditioned(model, x_labels):
            mu, logvar = model.encode(x)
            code = model.posterior.mean((mu, logvar))
        kl = model.kl_per_dim(mu, logvar).mean(0)
        dims, hidden = traversal_dims(kl, latent_variances(code), cfg.dims, cfg.show_inactive)
        base = code[0] if cfg.base == "image" else torch.zeros_like(code[0])
        values = torch.linspace(*cfg.range, cfg.steps, device=trained.device)
        # a conditional model: label=<class>, else the first image's own
        with conditioned(model, label if x_labels is None or label is not None else x_labels[0]):
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
    elif cfg.mode == "manifold":
        name, nrow = "manifold", cfg.steps
        first = None if classes is None else label if label is not None else classes.trained[0]
        with conditioned(model, first):  # a conditional model: label=<class>, else the first class
            images, grid_info, labels, columns = manifold(model, cfg, generator, mixture, sampler)
        info.update(grid_info)
    else:
        name, nrow = "interpolate", cfg.steps
        x, x_labels = encoded_inputs(trained, cfg, 2 * cfg.pairs, generator)
        if len(x) < 2:
            raise DataError(f"mode=interpolate needs at least 2 images; the {cfg.split} split has {len(x)}")
        with torch.no_grad(), conditioned(model, x_labels):
            mu = model.code(x)
        pairs = len(mu) // 2
        # a conditional model: each row decoded with label=<class>, else with its first image's own
        rows = None if x_labels is None else x_labels[0 : 2 * pairs : 2].repeat_interleave(cfg.steps)
        with conditioned(model, rows if label is None else label):
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
    if cfg.mode in ("traverse", "manifold"):
        written.append(out.path(f"{name}.json"))
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


@torch.no_grad()
def manifold(
    model: VAE,
    cfg: DictConfig,
    generator: torch.Generator,
    mixture: CodeMixture | None = None,
    sampler: str = "prior",
) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any], dict[str, list]]:
    """mode=manifold (vae_cli/manifold.py): the decoded quantile grid, (steps * steps) images row by row,
    over the prior's quantiles, or the fitted `mixture`'s (sampler=gmm|gaussian); what manifold.json
    records; the picture's words; a table's CSV columns."""
    dims = manifold_dims(cfg.dims, model.latent_dim)
    source = model.prior if mixture is None else mixture
    grid = manifold_grid(
        source, model.latent_dim, dims, cfg.steps, cfg.temperature, generator, model_device(model)
    )
    codes = grid.codes()
    images = torch.cat([model.likelihood.mean(model.decode(z)) for z in codes.split(DECODE_BATCH)])
    i, j = dims
    info = {
        "dims": [i, j],
        "probabilities": grid.probabilities.tolist(),
        "columns": grid.columns.tolist(),
        "rows": grid.rows.tolist(),
        "other_dims_at": grid.base.tolist(),
        "quantiles": "exact: temperature * Phi^-1(p)" if grid.exact else MANIFOLD_ESTIMATED,
        "of": "the prior" if mixture is None else f"sampler={sampler}'s fit to the training codes",
    }
    columns = {
        f"z{i}": [f"{v:.6g}" for v in codes[:, i].tolist()],
        f"z{j}": [f"{v:.6g}" for v in codes[:, j].tolist()],
    }
    log.info(
        "manifold: z%d (columns) and z%d (rows) over %s quantiles of %s, %d per side",
        i,
        j,
        "exact" if grid.exact else "estimated",
        info["of"],
        cfg.steps,
    )
    return images, info, manifold_labels(grid, info["of"]), columns


def model_device(model: VAE) -> torch.device:
    return next(model.parameters()).device


def check_vqvae_sampling(model: Any, cfg: DictConfig) -> None:
    """model=vqvae draws its code grids from its code prior (temperature divides the logits) and
    interpolates between encoded codes; what sweeps continuous latent dimensions, or fits a Gaussian to
    them, stops with one line."""
    if cfg.mode in ("traverse", "manifold"):
        raise ConfigError(
            f"mode={cfg.mode} sweeps continuous latent dimensions, and model=vqvae's code is a grid of "
            f"codebook entries: use mode=mean, draw or interpolate"
        )
    if cfg.sampler != "prior":
        raise ConfigError(
            f"sampler={cfg.sampler} fits a Gaussian to continuous codes, and model=vqvae draws its code "
            f"grids from its code prior (trained in stage two): use sampler=prior"
        )
    if cfg.mode in ("mean", "draw") and model.code_prior.is_uniform():
        log.warning(
            "the code prior of this checkpoint is untrained (uniform: model.prior_epochs=0, or a checkpoint of "
            "the first stage): its samples decode random code grids"
        )


def codes_sampler(trained: Trained, sampler: str, mode: str) -> str:
    """The sampler asked for; for a plain autoencoder (objective=ae), which has no prior, mode=mean/draw's
    sampler=prior is the Gaussian fitted to its training codes (sampler=gaussian), said in a log line."""
    if sampler != "prior" or mode not in CODE_MODES or not draws_no_codes(trained.config):
        return sampler
    log.info(
        "objective=ae has no prior: its codes come from a diagonal Gaussian fitted to the training codes "
        "(sampler=gaussian; sampler=gmm for a mixture)"
    )
    return "gaussian"


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
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """n images decoded from z ~ p(z), the model's prior (N(0, temperature^2 I) for the standard one; a
    mixture's components each spread by `temperature`), or from z ~ `mixture` (sampler=gmm, its
    Gaussians spread alike): E[x|z], or a draw x ~ p(x|z) when `draw`. `labels` (n,): a conditional
    model's class of each."""
    if mixture is None:
        z = model.prior_codes(n, temperature, generator)
    else:
        z = mixture.sample(n, generator, temperature).to(next(model.parameters()).device)
    images = []
    chunks = z.split(DECODE_BATCH)  # thousands of samples (e.g. for FID) in device-sized passes
    rows = [None] * len(chunks) if labels is None else labels.to(z.device).split(DECODE_BATCH)
    for codes, chunk_labels in zip(chunks, rows, strict=True):
        with conditioned(model, chunk_labels):
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


@torch.no_grad()
def class_traversal(
    model: VAE,
    x: torch.Tensor,
    cfg: DictConfig,
    x_labels: torch.Tensor | None = None,
    label: Any = None,
) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any], dict[str, list]]:
    """posterior=categorical's traversal: one row per categorical variable (highest average KL to the
    uniform prior first; inactive ones, whose most likely class never changes over x, hidden as
    dimensions are), one column per class: the base code with that variable switched to that class.
    The base is the first image's most likely code (base=image) or, as a one-hot code has no zero
    (base=zero), each variable's most frequent class over the encoded images. `range` and `steps` do
    not apply. Returns (images, traverse.json's rows, the picture's labels, the CSV's columns). A
    conditional model encodes x with `x_labels` and decodes with `label`."""
    classes, variables = model.posterior.classes, model.posterior.variables
    with conditioned(model, x_labels):
        mu, logvar = model.encode(x)
    code = model.posterior.mean((mu, logvar))  # (n, variables * K), one-hot blocks
    kl = model.kl_per_dim(mu, logvar).mean(0).view(variables, classes).sum(-1)  # per variable
    variances = latent_variances(code).view(variables, classes).sum(-1).to(kl.device)
    rows, hidden = traversal_dims(kl, variances, cfg.dims, cfg.show_inactive)
    blocks = code.view(-1, variables, classes)
    if cfg.base == "image":
        base, said = blocks[0], f"the first {cfg.split} image's most likely code"
    else:
        base = torch.nn.functional.one_hot(blocks.sum(0).argmax(-1), classes).to(code.dtype)
        said = "each variable's most frequent class"
    z = base.expand(len(rows), classes, variables, classes).clone()  # [row, column] = a code
    row, column = torch.arange(len(rows), device=z.device), torch.arange(classes, device=z.device)
    z[row[:, None], column[None, :], rows[:, None]] = torch.eye(classes, device=z.device, dtype=z.dtype)
    with conditioned(model, label):
        images = model.likelihood.mean(model.decode(z.flatten(2).flatten(0, 1)))
    info = {
        "rows": [{"variable": int(v), "kl": float(kl[v])} for v in rows],
        "columns": list(range(classes)),
        "hidden_inactive": hidden,
        "kl_means": "KL(q(z_j|x) || uniform) of categorical variable j, in closed form, averaged over x",
        "base": said,
    }
    shown = f"{len(rows)} of {variables} variables shown"
    if hidden:
        shown += f"; {len(hidden)} inactive hidden (show_inactive=true shows them)"
    labels = {
        "title": [
            f"traversal from {said}: row = categorical variable (average KL, nats), column = its class",
            shown,
        ],
        "row_labels": [f"v{r['variable']}  KL {r['kl']:.2f}" for r in info["rows"]],
        "col_labels": [str(c) for c in range(classes)],
    }
    columns = {
        "variable": [int(v) for v in rows for _ in range(classes)],
        "class": [c for _ in rows for c in range(classes)],
    }
    log.info(
        "rows: categorical variables %s (average KL %s nats), each through its %d classes",
        rows.tolist(),
        _nats(kl[rows]),
        classes,
    )
    return images, info, labels, columns


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


def encoded_inputs(
    trained: Trained, cfg: DictConfig, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n images of the split, as the model sees them (binarised if it was trained so), and, for a
    conditional model, their labels (else None)."""
    data = load_data(trained, cfg.data_dir)
    split = pick_split(data, cfg.split)
    images = first_images(split, n)
    x = prepare_batch(images.to(trained.device), data.binarize, generator)
    if classes_of(trained.model) is None:
        return x, None
    shown = split.subset(torch.arange(len(images)))
    check_split_labels(trained.model, shown, f"the {cfg.split} split of {data.name}")
    return x, shown.labels.to(trained.device)


# --- a conditional model (model.conditional=true): which class is decoded ---------------------------------


def chosen_label(classes: Classes | None, cfg: DictConfig) -> int | None:
    """label=<class>: its number, for a conditional model (one it was trained on); None without label=.
    label= and mode=classes on another model: one line."""
    if classes is None:
        if cfg.label is not None or cfg.mode == "classes":
            what = "mode=classes" if cfg.mode == "classes" else f"label={cfg.label}"
            raise ConfigError(
                f"{what} is for a conditional model (trained with model.conditional=true), and this one is not"
            )
        return None
    return None if cfg.label is None else classes.index(cfg.label, "label")


def drawn_labels(classes: Classes, label: int | None, n: int) -> torch.Tensor:
    """mode=mean/draw's classes, (n,): label=<class> for all, else the trained classes in turn."""
    return classes.in_turn(n) if label is None else torch.full((n,), label, dtype=torch.long)


@torch.no_grad()
def class_rows(
    model: VAE, classes: Classes, cfg: DictConfig, generator: torch.Generator, mixture: CodeMixture | None
) -> tuple[torch.Tensor, dict[str, Any], dict[str, list]]:
    """mode=classes: one row per trained class, nrow columns: the same nrow codes z ~ p(z) (or from the
    fitted mixture of sampler=gmm|gaussian) down each column, decoded with each row's class, so that a
    column is one style in every class. Returns (images, the picture's words, a table's CSV columns)."""
    ncol, trained = cfg.nrow, torch.tensor(classes.trained)
    if mixture is None:
        z = model.prior_codes(ncol, cfg.temperature, generator)
    else:
        z = mixture.sample(ncol, generator, cfg.temperature).to(model_device(model))
    codes, rows = z.repeat(len(trained), 1), trained.repeat_interleave(ncol).to(z.device)
    images = []
    for chunk, chunk_labels in zip(codes.split(DECODE_BATCH), rows.split(DECODE_BATCH), strict=True):
        with conditioned(model, chunk_labels):
            images.append(model.likelihood.mean(model.decode(chunk)))
    names = [classes.name(k) for k in classes.trained]
    drawn = "z ~ p(z)" if mixture is None else f"from sampler={cfg.sampler}'s fit"
    words = {
        "title": [f"one row per class, the same code z down each column ({ncol} codes {drawn})"],
        "row_labels": names,
    }
    return torch.cat(images), words, {"class": [n for n in names for _ in range(ncol)]}


def _nats(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values.tolist()) + "]"
