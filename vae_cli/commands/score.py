"""`vae score`: how anomalous each example is under a trained model, most anomalous first.

    score        the score chosen with score= (vae_cli/scores.py: neg_elbo, iwae, recon_error, complexity,
                 likelihood_ratio, latent; by default -ELBO, or -IWAE_k with iwae_k=k). Examples the model finds
                 anomalous score high.
    neg_elbo, recon, kl, iwae_nll, recon_error   as `vae evaluate` computes them (vae_cli/estimators.py),
                 from S draws z_s ~ q(z|x) per example (S = iwae_k, else elbo_samples); then the chosen
                 score's own columns (complexity and png_bits; likelihood_ratio and background_nll)

`input` is a split of the training data (train | val | test, rebuilt from the checkpoint), a folder of
images, one image, or a .npy/.npz/.pt/.csv file, read as `vae_cli.data.readers` reads training data
(standardised with the checkpoint's statistics when training standardised). Binarised training data means inputs
binarised once with `seed`, as `vae evaluate` does.

Ground truth, when there is one, gives ROC AUC and average precision of the ranking:
`anomaly_class=` (these labels are anomalies), `normal_class=` (every other label is), else the classes
training left out with `dataset.exclude_classes` (for a split input), else 0/1 labels from a tensor file
or label column (1 = anomalous).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from rich.table import Table

from vae_cli.api import Trained
from vae_cli.commands.common import load_data, open_run, pick_split, run_tensorboard
from vae_cli.config import SPLITS, validate_score_config
from vae_cli.console import console, fmt
from vae_cli.data import ImageSplit
from vae_cli.data.base import Split, class_indices, known_classes
from vae_cli.data.readers import (
    IMAGE_EXTENSIONS,
    TENSOR_EXTENSIONS,
    csv_columns,
    read_images,
    read_tensor_file,
)
from vae_cli.data.tensor import in_unit_range, standardize
from vae_cli.errors import ConfigError, DataError
from vae_cli.io import write_json
from vae_cli.metrics import average_precision, roc_auc
from vae_cli.models.conditional import check_labels, classes_of, conditioned, input_labels
from vae_cli.pictures import labelled_picture, save_picture, shown_and_input, stack_pictures
from vae_cli.scores import SCORES, Score, ScoreContext

log = logging.getLogger("vae")


@dataclass
class Inputs:
    """What is scored: the examples, their names and labels, and how to prepare them."""

    split: Split  # its names and labels are the inputs'
    source: str  # for messages: "fashion_mnist test", a path
    binarize: str
    label_names: list[str] = field(default_factory=list)
    from_file: bool = False  # a tensor file: its 0/1 labels mark anomalies
    left_out: list[int] = field(default_factory=list)  # classes training never saw (dataset.exclude_classes)
    unit_range: bool = True
    classes: list[int] | None = None  # the label numbers there are (a split: the dataset's), else the input's

    @property
    def names(self) -> list[str]:
        return self.split.names

    @property
    def labels(self) -> torch.Tensor | None:
        return self.split.labels


def score(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    trained, out = open_run(cfg, run_dir, validate_score_config)
    device = trained.device
    chosen = chosen_score(cfg)
    if chosen.check is not None:  # before the long pass: a score that cannot apply stops here
        chosen.check(trained, cfg)
    inputs = load_inputs(trained, cfg)
    anomalous, truth = ground_truth(cfg, inputs)  # before the long pass: a wrong class stops here
    n = len(inputs.split)
    kind = score_label(chosen, cfg)
    log.info("scoring %d examples of %s by %s with %s on %s", n, inputs.source, kind, trained.path, device)

    per_example = score_split(trained, inputs.split, inputs.binarize, cfg, chosen)
    order = torch.sort(per_example["score"], descending=True, stable=True).indices

    csv_path = out.path("scores.csv")
    write_csv(csv_path, order, per_example, inputs, anomalous)
    written = [csv_path]
    picture = extremes_picture(trained, inputs, order, per_example["score"], cfg, f"{kind}, {chosen.units}")
    if picture is not None:
        grid_path = out.path("extremes.png")
        save_picture(picture, grid_path)
        written.append(grid_path)

    result: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "input": inputs.source,
        "num_examples": n,
        "score": chosen.name,
        "score_label": kind,
        "units": f"{chosen.units} per example",
        "log_likelihood_estimate": f"-IWAE_{cfg.iwae_k}" if cfg.iwae_k else "-ELBO",
        "iwae_k": cfg.iwae_k,
        "elbo_samples": cfg.elbo_samples if not cfg.iwae_k else None,
        "seed": cfg.seed,
        "mean_score": float(per_example["score"].mean()),
        "ground_truth": truth or None,
    }
    if anomalous is not None:
        result.update(ranking_metrics(per_example, anomalous))
    metrics_path = out.path("score_metrics.json")
    write_json(metrics_path, result)
    written.append(metrics_path)

    if cfg.log_to_run and (tb := run_tensorboard(trained)):
        keys = ("roc_auc", "average_precision", "mean_score")
        tb.scalars("score", {k: result[k] for k in keys if _finite(result.get(k))}, trained.step)
        tb.close()
    console.print(top_table(order, per_example, inputs, anomalous, f"{kind}, {chosen.units}"))
    if anomalous is not None:
        console.print(
            f"{truth}: {result['num_anomalous']} anomalous, {result['num_normal']} normal; "
            f"ROC AUC [bold]{_show(result['roc_auc'])}[/bold], average precision "
            f"[bold]{_show(result['average_precision'])}[/bold] (by recon_error: "
            f"{_show(result['recon_error_roc_auc'])}, {_show(result['recon_error_average_precision'])})"
        )
    for path in written:
        console.print(f"wrote [bold]{path}[/bold]")
    return result


# --- what is scored --------------------------------------------------------------------------------------


def load_inputs(trained: Trained, cfg: DictConfig) -> Inputs:
    """`input`: a split of the training data, a folder of images, an image, or a tensor file."""
    if cfg.input in SPLITS:
        inputs = split_inputs(trained, cfg)
    else:
        path = Path(cfg.input).expanduser()
        if not path.exists():
            raise DataError(
                f"input={cfg.input} does not exist: pass train, val or test (a split of the training "
                f"data), a folder of images, an image or a .npy/.npz/.pt/.csv file"
            )
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in IMAGE_EXTENSIONS:
            inputs = image_inputs(trained, path)
        elif suffix in TENSOR_EXTENSIONS:
            inputs = tensor_inputs(trained, path, cfg.label_column)
        else:
            raise DataError(f"input={cfg.input}: expected a folder, an image or a .npy/.npz/.pt/.csv file")
    if len(inputs.split) == 0:
        raise DataError(f"input={cfg.input} holds no examples")
    if cfg.max_examples and cfg.max_examples < len(inputs.split):
        inputs.split = inputs.split.subset(torch.arange(cfg.max_examples))
    # a conditional model scores each input given its class: labelled inputs of its classes, else one line
    check_labels(trained.model, inputs.labels, f"input={cfg.input}")
    return inputs


def split_inputs(trained: Trained, cfg: DictConfig) -> Inputs:
    data = load_data(trained, cfg.data_dir)
    split = pick_split(data, cfg.input)
    if split.names is None:
        split = ImageSplit(split.images, split.labels, split.factors, [str(i) for i in range(len(split))])
    left_out = (
        class_indices(list(trained.dataset.exclude_classes), data.label_names, "dataset.exclude_classes")
        if trained.dataset.exclude_classes
        else []
    )
    return Inputs(
        split,
        f"{data.name} {cfg.input}",
        data.binarize,
        data.label_names,
        from_file=data.name == "tensor",
        left_out=left_out,
        unit_range=data.unit_range,
        classes=known_classes([data.train.labels, data.val.labels, data.test.labels], data.label_names),
    )


def _binarized(binarize: str) -> str:
    # Binarised training data (static or dynamic) means binary inputs: drawn once, with the seed.
    return "dynamic" if binarize in ("static", "dynamic") else binarize


def image_inputs(trained: Trained, path: Path) -> Inputs:
    shape = trained.model.image_shape
    if shape[1] == 1 and trained.dataset.name == "tensor":
        raise DataError(
            f"the model was trained on vectors of {shape[2]} features: pass a .npy/.npz/.pt/.csv file, not images"
        )
    if shape[0] not in (1, 3):
        raise DataError(f"the model's inputs have {shape[0]} channels: images (grey or RGB) do not fit it")
    found = read_images(path, shape, what=f"input={path}")
    # a conditional model: the sub-folders' classes in its numbering (matched by name)
    labels, label_names = input_labels(found.labels, found.label_names, classes_of(trained.model), str(path))
    return Inputs(
        ImageSplit(found.images, labels, None, found.names),
        str(path),
        _binarized(trained.dataset.binarize),
        label_names,
    )


def tensor_inputs(trained: Trained, path: Path, label_column: str | None) -> Inputs:
    # The training data's label column, when the file has it; one named on the command line must be there.
    x, labels, label_names = (
        read_tensor_file(path, label_column)
        if label_column
        else read_tensor_file(path, trained.dataset.get("label_column"), optional=True)
    )
    if path.suffix.lower() == ".csv":
        x = match_columns(trained, path, x, label_column)
    check_shape(path, tuple(x.shape[1:]), tuple(trained.model.image_shape))
    # a conditional model: the label column's classes in its numbering (named ones matched by name)
    labels, label_names = input_labels(labels, label_names, classes_of(trained.model), str(path))
    if trained.dataset.get("standardize", False):  # only dataset=tensor has the key
        stats = trained.data_stats
        if stats is None:  # an older checkpoint: the statistics are those of its rebuilt training split
            log.info("the checkpoint holds no standardisation statistics: taking them from its training data")
            stats = load_data(trained, None).stats
        x = standardize(x, stats)
    return Inputs(
        ImageSplit(x, labels, None, [str(i) for i in range(len(x))]),
        str(path),
        _binarized(trained.dataset.binarize),
        label_names,
        from_file=True,
        unit_range=not trained.dataset.get("standardize", False) and in_unit_range(x),
    )


def match_columns(trained: Trained, path: Path, x: torch.Tensor, label_column: str | None) -> torch.Tensor:
    """A CSV scored by a model trained on a CSV: its feature columns matched to training's by name (put in
    training's order); a column missing, or one training did not have, is one line naming it. Files
    without a header (columns named by position), and older checkpoints, are matched by position."""
    trained_names = trained.feature_names
    columns = csv_columns(path)
    label = label_column or trained.dataset.get("label_column")
    names = [c for c in columns if c != label]
    if trained_names is None or _positional(trained_names) or _positional(columns):
        return x
    missing = [c for c in trained_names if c not in names]
    extra = [c for c in names if c not in trained_names]
    if missing:
        has = f" (it has {_quoted(extra)}, which training did not)" if extra else ""
        raise DataError(
            f"input={path} lacks the column{'s' if len(missing) > 1 else ''} {_quoted(missing)} that the "
            f"model was trained on{has}"
        )
    if extra:
        label = f"label_column={extra[0]}" if len(extra) == 1 else "label_column=<name>"
        raise DataError(
            f"input={path} has the column{'s' if len(extra) > 1 else ''} {_quoted(extra)} that training did "
            f"not have: drop {'them' if len(extra) > 1 else 'it'}, or name the label column ({label})"
        )
    if names != trained_names:
        log.info("input=%s: the columns are in another order than in training: matched by name", path)
        x = x[..., [names.index(c) for c in trained_names]]
    return x


def check_shape(path: Path, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    """The examples of a tensor file must have the model's shape: one line saying how they differ."""
    if got == want:
        return

    def kind(shape: tuple[int, ...]) -> str:
        if shape[:2] == (1, 1):
            return f"{shape[-1]} feature{'s' if shape[-1] != 1 else ''}"
        return f"{'x'.join(map(str, shape))} images (C x H x W)"

    if got[:2] == (1, 1) and want[:2] == (1, 1):
        hint = "; is the label column named? (label_column=<name>)" if got[-1] == want[-1] + 1 else ""
        raise DataError(
            f"input={path} has {kind(got)} per example, the model was trained on {kind(want)}{hint}"
        )
    raise DataError(
        f"input={path} holds {kind(got).removesuffix(' (C x H x W)')}, the model takes {kind(want)}"
    )


def _positional(columns: list[str]) -> bool:
    """Columns named 0, 1, 2, ...: a CSV without a header row."""
    return all(c == str(i) for i, c in enumerate(columns))


def _quoted(names: list[str], most: int = 8) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# --- the scores ------------------------------------------------------------------------------------------


def chosen_score(cfg: DictConfig) -> Score:
    """score=<name>; by default neg_elbo, or iwae when iwae_k is set."""
    return SCORES.get(cfg.score or ("iwae" if cfg.iwae_k else "neg_elbo"))


def score_label(chosen: Score, cfg: DictConfig) -> str:
    """How tables and pictures name the score: -ELBO, -IWAE_64, complexity, ..."""
    return {"neg_elbo": "-ELBO", "iwae": f"-IWAE_{cfg.iwae_k}", "likelihood_ratio": "-LLR"}.get(
        chosen.name, chosen.name
    )


def score_split(
    trained: Trained, split: Split, binarize: str, cfg: DictConfig, chosen: Score | None = None
) -> dict[str, torch.Tensor]:
    """Per-example score, neg_elbo, recon, kl, recon_error (and iwae_nll), then the chosen score's own
    columns, each (N,) float64 on the CPU."""
    chosen = chosen or chosen_score(cfg)

    def training() -> tuple[Split, str]:
        data = load_data(trained, cfg.data_dir)
        return pick_split(data, "train"), data.binarize

    context = ScoreContext(
        trained,
        split,
        binarize,
        cfg.iwae_k,
        cfg.elbo_samples,
        cfg.seed,
        cfg.batch_size,
        cfg.chunk,
        training=training,
        components=cfg.components,
    )
    columns = chosen(context)
    result = {"score": columns.get("score", next(iter(columns.values())))}
    result.update(context.estimates())
    result.update({name: values for name, values in columns.items() if name != "score"})
    return result


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, ListConfig | list | tuple) else [value]


def ground_truth(cfg: DictConfig, inputs: Inputs) -> tuple[torch.Tensor | None, str]:
    """(anomalous (N,) bool, how it was decided), or (None, "") when nothing says which are anomalies."""
    labels = inputs.labels
    for key, anomalies_listed in (("anomaly_class", True), ("normal_class", False)):
        value = cfg[key]
        if value is None:
            continue
        if labels is None:
            raise ConfigError(
                f"{key}={value} needs labelled input; {inputs.source} has no labels (sub-folders of an "
                f"image folder, a label column, or a labelled training dataset)"
            )
        known = inputs.classes if inputs.classes is not None else known_classes([labels], inputs.label_names)
        classes = class_indices(_as_list(value), inputs.label_names, key, known)
        listed = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
        described = ", ".join(_label_text(c, inputs.label_names) for c in classes)
        if not listed.any() or listed.all():
            present = ", ".join(_label_text(c, inputs.label_names) for c in labels.unique().tolist())
            anomalies = bool(listed.all()) == anomalies_listed
            raise ConfigError(
                f"{key}={described}: {'every' if listed.all() else 'no'} example of {inputs.source} has "
                f"{'one of those labels' if len(classes) > 1 else 'that label'} (its labels: {present}), so "
                f"every input would be {'anomalous' if anomalies else 'normal'} and there is nothing to rank "
                f"against: list the labels that occur"
            )
        return (listed, f"anomalies: {described}") if anomalies_listed else (~listed, f"normal: {described}")
    if labels is None:
        return None, ""
    if inputs.left_out:
        left_out = torch.tensor(inputs.left_out, dtype=labels.dtype)
        names = [_label_text(c, inputs.label_names) for c in inputs.left_out]
        return torch.isin(
            labels, left_out
        ), f"anomalies: the classes left out of training ({', '.join(names)})"
    if inputs.from_file and not inputs.label_names and set(labels.unique().tolist()) <= {0, 1}:
        return labels == 1, "anomalies: label 1"
    log.info("the input has labels; say which mark anomalies with anomaly_class=... or normal_class=...")
    return None, ""


def ranking_metrics(per_example: dict[str, torch.Tensor], anomalous: torch.Tensor) -> dict[str, Any]:
    num_anomalous = int(anomalous.sum())
    result: dict[str, Any] = {"num_anomalous": num_anomalous, "num_normal": len(anomalous) - num_anomalous}
    if num_anomalous in (0, len(anomalous)):
        log.warning(
            "every input is %s: ROC AUC and average precision need both kinds",
            "anomalous" if num_anomalous else "normal",
        )
    for prefix, column in (("", "score"), ("recon_error_", "recon_error")):
        result[f"{prefix}roc_auc"] = roc_auc(per_example[column], anomalous)
        result[f"{prefix}average_precision"] = average_precision(per_example[column], anomalous)
    return result


# --- the report ------------------------------------------------------------------------------------------


def _label_text(label: int, label_names: list[str]) -> str:
    return label_names[label] if 0 <= label < len(label_names) else str(label)


def write_csv(
    path: Path,
    order: torch.Tensor,
    per_example: dict[str, torch.Tensor],
    inputs: Inputs,
    anomalous: torch.Tensor | None,
) -> None:
    """One row per input, most anomalous first."""
    numbers = [k for k in ("score", "neg_elbo", "iwae_nll", "recon", "kl", "recon_error") if k in per_example]
    numbers += [k for k in per_example if k not in numbers]  # the chosen score's own columns
    header = ["rank", "index", "name", *numbers]
    header += ["label"] if inputs.labels is not None else []
    header += ["anomalous"] if anomalous is not None else []
    values = {k: per_example[k].tolist() for k in numbers}
    labels = inputs.labels.tolist() if inputs.labels is not None else None
    flags = anomalous.tolist() if anomalous is not None else None
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for rank, i in enumerate(order.tolist(), start=1):
            row = [rank, i, inputs.names[i], *(f"{values[k][i]:.6g}" for k in numbers)]
            if labels is not None:
                row.append(_label_text(labels[i], inputs.label_names))
            if flags is not None:
                row.append(int(flags[i]))
            writer.writerow(row)


@torch.no_grad()
def extremes_grid(
    trained: Trained,
    inputs: Inputs,
    order: torch.Tensor,
    n: int,
    device: torch.device,
    seed: int = 0,
) -> tuple[torch.Tensor, int] | None:
    """The n most anomalous inputs above their reconstructions, then the n least anomalous above theirs;
    None for data that are not images in [0, 1].

    The inputs are shown as they are (grey, never binarised); the reconstructions are of what the model
    scored: binarised (drawn with `seed`) when it was trained on binarised data."""
    c, h, _ = trained.model.image_shape
    if c not in (1, 3) or h == 1 or not inputs.unit_range:
        log.info("no grid of examples: the inputs are not images in [0, 1]")
        return None
    n = min(n, len(order))
    picked = torch.cat([order[:n], order.flip(0)[:n]]).tolist()
    images = inputs.split.take(picked)
    generator = torch.Generator(device=device).manual_seed(seed)
    x, model_input = shown_and_input(images.to(device), inputs.binarize, generator)
    labels = inputs.labels[picked].to(device) if classes_of(trained.model) is not None else None
    with conditioned(trained.model, labels):  # a conditional model: each input's own class
        recon = trained.model.reconstruct(model_input)
    x, recon = x.float().clamp(0, 1).cpu(), recon.float().clamp(0, 1).cpu()
    rows = [x[:n], recon[:n], x[n:], recon[n:]]
    return torch.cat(rows), n


def extremes_picture(
    trained: Trained,
    inputs: Inputs,
    order: torch.Tensor,
    scores: torch.Tensor,
    cfg: DictConfig,
    kind: str,
) -> Any:
    """extremes.png: two labelled halves, "most anomalous" (highest score first) and "least anomalous"
    (lowest first), each a row of inputs with their scores and rank above the row of their
    reconstructions; None when the inputs are not images."""
    grid = extremes_grid(trained, inputs, order, cfg.n, trained.device, cfg.seed)
    if grid is None:
        return None
    images, n = grid
    top, bottom = order[:n].tolist(), order.flip(0)[:n].tolist()
    total = len(order)
    halves = []
    for half, (title, picked, ranks) in enumerate(
        [
            ("most anomalous", top, range(1, n + 1)),
            ("least anomalous", bottom, range(total, total - n, -1)),
        ]
    ):
        cells = images[2 * n * half : 2 * n * (half + 1)]
        captions = [f"#{r} {float(scores[i]):.1f}" for r, i in zip(ranks, picked, strict=True)] + [None] * n
        halves.append(
            labelled_picture(
                cells,
                n,
                cfg.scale,
                title=[f"{title} of {total} (score {kind}: rank and score above each input)"]
                + ([f"from {inputs.source}"] if half == 0 else []),
                row_labels=["input", "reconstruction"],
                captions=captions,
            )
        )
    return stack_pictures(halves)


def top_table(
    order: torch.Tensor,
    per_example: dict[str, torch.Tensor],
    inputs: Inputs,
    anomalous: torch.Tensor | None,
    kind: str,
    rows: int = 10,
) -> Table:
    table = Table(title=f"most anomalous of {len(order)} in {inputs.source} (score {kind})")
    for column in ("rank", "name", "score", "recon_error"):
        table.add_column(column, justify="left" if column == "name" else "right")
    if inputs.labels is not None:
        table.add_column("label")
    if anomalous is not None:
        table.add_column("anomalous")
    for rank, i in enumerate(order[:rows].tolist(), start=1):
        row = [
            str(rank),
            inputs.names[i],
            fmt(float(per_example["score"][i])),
            fmt(float(per_example["recon_error"][i])),
        ]
        if inputs.labels is not None:
            row.append(_label_text(int(inputs.labels[i]), inputs.label_names))
        if anomalous is not None:
            row.append("yes" if anomalous[i] else "")
        table.add_row(*row)
    return table


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _show(value: float) -> str:
    return f"{value:.4f}" if _finite(value) else "n/a"
