"""`vae report <sweep folder>`: the table of a sweep (`vae train -m ...`) and plots of it.

    vae report outputs/train/multirun/2026-11-21/10-32-05

rebuilds `summary.csv` from the job folders (so it works on a sweep that is still running or was
interrupted: it reports what has finished), prints the table, and writes into `<sweep>/report/`:

    by_beta.png        final test loss, -ELBO, reconstruction, KL, active units (and MIG, DCI) against β,
                       one line per latent_dim
    by_latent_dim.png  the same against latent_dim, one line per β
    by_<key>.png       the same against any other swept numeric key (by_train_lr.png for
                       `train.lr=1e-4,1e-3,1e-2`; a log axis when the values span 10x or more);
                       by_job.png when no numeric key varies
    tradeoff.png       reconstruction against MIG, one point per job (data with ground-truth factors)
    samples.png        prior samples decoded by each job's best checkpoint, one panel per job

Not a Hydra command (its only input is the folder), but its settings are key=value like every other
command's: `vae report <folder> out=<folder> samples=16 seed=0 device=cpu`.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vae_cli.errors import ConfigError, DataError, exit_on_user_error
from vae_cli.sweep.summary import collect, find_jobs, param_columns, summary_table, write_summary

log = logging.getLogger("vae")

#: Panels of the metric plots: summary column -> axis label. Each is drawn when some job has it.
PANELS = {
    "test_loss": "loss (recon + β·KL)",
    "test_neg_elbo": "-ELBO",
    "test_recon": "reconstruction",
    "test_kl": "KL",
    "active_units": "active units",
    "mig": "MIG (disentanglement)",
    "dci": "DCI disentanglement",
}


#: vae report's keys, given as key=value like every other command's: key -> (default, meaning)
REPORT_KEYS: dict[str, tuple[Any, str]] = {
    "out": (None, "the folder for the plots; null: <sweep folder>/report"),
    "samples": (16, "prior samples per job in samples.png (0: none)"),
    "seed": (0, "seed of the prior samples (the same codes for every job)"),
    "device": ("cpu", "device to decode the samples on (cpu, cuda, mps)"),
}
REPORT_USAGE = "usage: vae report <sweep folder> [out=<folder>] [samples=16] [seed=0] [device=cpu]"


def report_help() -> str:
    lines = [
        REPORT_USAGE,
        "",
        "Rebuild a sweep's summary.csv from its job folders, print the table and draw plots (PNG) of the",
        "final losses against each swept key, and a grid of each job's samples.",
        "",
        "  <sweep folder>  a sweep folder, e.g. outputs/train/multirun/<date>/<time>",
    ]
    lines += [
        f"  {k + '=':<15} {meaning} (default: {default})" for k, (default, meaning) in REPORT_KEYS.items()
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`<sweep folder> [key=value ...]`; a wrong key or an option spelt --key is one ConfigError that
    names the right spelling."""
    import difflib
    import re

    folder: str | None = None
    values: dict[str, str] = {}
    for arg in argv:
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("-"):
            right = f"{name}=<value>" if name in REPORT_KEYS else "key=value"
            raise ConfigError(f"vae report takes {right}, not {arg}: {REPORT_USAGE} (vae report --help)")
        if re.fullmatch(r"[A-Za-z_][\w.]*=.*", arg, re.DOTALL):
            if name not in REPORT_KEYS:
                close = difflib.get_close_matches(name, REPORT_KEYS, n=1)
                hint = f"; did you mean {close[0]}=?" if close else ""
                keys = ", ".join(f"{k}=" for k in REPORT_KEYS)
                raise ConfigError(
                    f"{name} is not a key of vae report{hint} (its keys: {keys}; vae report --help)"
                )
            values[name] = arg.split("=", 1)[1]
        elif folder is None:
            folder = arg
        else:
            raise ConfigError(f"vae report takes one sweep folder, not {folder} and {arg}: {REPORT_USAGE}")
    if folder is None:
        raise ConfigError(f"vae report needs a sweep folder: {REPORT_USAGE}")

    def number(key: str, minimum: int | None = None) -> int:
        text = values.get(key)
        if text is None:
            return int(REPORT_KEYS[key][0])
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{key}={text} is invalid: must be a whole number") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key}={text} is invalid: must be >= {minimum}")
        return value

    out = values.get("out")
    return argparse.Namespace(
        folder=Path(folder).expanduser(),
        out=Path(out).expanduser() if out not in (None, "", "null") else None,
        samples=number("samples", 0),
        seed=number("seed", 0),
        device=values.get("device", REPORT_KEYS["device"][0]).lower() or "cpu",
    )


def main(argv: Sequence[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(report_help())
        return
    args = exit_on_user_error(lambda: parse_args(argv))
    exit_on_user_error(lambda: report(args.folder, args.out, args.samples, args.seed, args.device))


def report(
    folder: Path, out: Path | None = None, samples: int = 16, seed: int = 0, device: str = "cpu"
) -> dict[str, Path]:
    """Write summary.csv and the plots; returns what was written, by name."""
    from vae_cli.console import console

    folder = check_sweep_folder(folder)
    rows = collect(folder)
    summary = write_summary(folder, rows)
    done = [r for r in rows if r["status"] == "done"]
    console.print(summary_table(rows, f"sweep {folder}: {len(done)} of {len(rows)} jobs done"))
    written = {"summary": summary}
    if done:
        out = out or folder / "report"
        out.mkdir(parents=True, exist_ok=True)
        written.update(draw_metric_plots(done, out))
        if samples > 0:
            grid = draw_samples(done, folder, out / "samples.png", samples, seed, device)
            if grid:
                written["samples"] = grid
    else:
        console.print("no job has finished yet: no plots")
    for path in written.values():
        console.print(f"wrote [bold]{path}[/bold]")
    return written


def check_sweep_folder(folder: Path) -> Path:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise DataError(
            f"{folder} is not a folder: pass a sweep folder, e.g. outputs/train/multirun/<date>/<time>"
        )
    jobs = find_jobs(folder)
    if not jobs:
        if (folder / ".hydra").is_dir():
            raise DataError(f"{folder} is one run, not a sweep: pass the sweep folder above its job folders")
        raise DataError(
            f"{folder} holds no sweep jobs (folders with .hydra/overrides.yaml): pass the folder of a "
            f"`vae train -m ...` sweep, e.g. outputs/train/multirun/<date>/<time>"
        )
    parents = sorted({j.parent for j in jobs})
    if folder in parents:
        return folder
    if len(parents) > 1:
        latest = max(parents, key=lambda p: p.stat().st_mtime)
        raise DataError(f"{folder} holds {len(parents)} sweeps: pass one of them, e.g. vae report {latest}")
    return parents[0]  # a folder above a single sweep (e.g. outputs/train/multirun/<date>): that sweep


# --- plots --------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _values(rows: list[dict[str, Any]], key: str) -> list[Any]:
    return sorted({r[key] for r in rows if _is_number(r.get(key))})


def swept_axes(rows: list[dict[str, Any]]) -> list[str]:
    """The numeric keys the sweep varies, each an x-axis: beta, latent_dim and any other swept key whose
    values are all numbers (train.lr, train.batch_size, dataset.size, ...), in the summary's order."""
    axes = []
    for key in param_columns(rows):
        values = [r.get(key) for r in rows if r.get(key) not in ("", None)]
        if len(_values(rows, key)) > 1 and all(_is_number(v) for v in values):
            axes.append(key)
    return axes


def _group_for(x: str, rows: list[dict[str, Any]], axes: list[str]) -> str:
    """One line per value of this key in the plots against x: another swept numeric key, else another
    swept key of any kind (model=conv,mlp), else none."""
    others = [k for k in axes if k != x]
    if others:
        return others[0]
    varied = [k for k in param_columns(rows) if k != x and len({str(r.get(k)) for r in rows}) > 1]
    return varied[0] if varied else ""


def _file_key(x: str) -> str:
    return x.replace(".", "_").replace("/", "_")


def draw_metric_plots(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """The metrics against each swept numeric key (by_beta.png, by_latent_dim.png, by_train_lr.png, ...),
    one line per value of another swept key; against the job number when no numeric key varies. Plus
    reconstruction against MIG when the jobs have a MIG."""
    written = {}
    panels = {k: v for k, v in PANELS.items() if any(_is_number(r.get(k)) for r in rows)}
    axes = swept_axes(rows)
    for x in axes or ["job"]:
        path = out / f"by_{_file_key(x)}.png"
        draw_against(rows, x, _group_for(x, rows, axes) if axes else "", panels, path)
        written[f"by_{_file_key(x)}"] = path
    if "mig" in panels and "test_recon" in panels:
        path = out / "tradeoff.png"
        draw_tradeoff(rows, path)
        written["tradeoff"] = path
    return written


def log_axis(x: str, values: list[float]) -> bool:
    """A log x-axis for positive values spanning 10x or more (a learning rate, say), and for β swept
    over more than two values (its usual doubling steps)."""
    if not values or min(values) <= 0:
        return False
    return max(values) / min(values) >= 10 or (x == "beta" and len(values) > 2)


def _axis_name(x: str) -> str:
    return "β" if x == "beta" else x


def draw_against(rows: list[dict[str, Any]], x: str, group: str, panels: dict[str, str], path: Path) -> None:
    plt = _pyplot()
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    numeric_group = bool(group) and all(
        _is_number(r.get(group)) for r in rows if r.get(group) not in ("", None)
    )
    if not group:
        groups: list[Any] = [None]
    elif numeric_group:
        groups = _values(rows, group)
    else:
        groups = sorted({str(r.get(group)) for r in rows})
    xs_all = _values(rows, x)
    log_x = log_axis(x, xs_all)
    for ax, (key, label) in zip(axes.flat, panels.items(), strict=False):
        for g in groups:
            points = sorted(
                (r[x], r[key])
                for r in rows
                if (g is None or (r.get(group) if numeric_group else str(r.get(group))) == g)
                and _is_number(r.get(x))
                and _is_number(r.get(key))
            )
            if points:
                xs, ys = zip(*points, strict=True)
                name = (
                    None if g is None else f"{_axis_name(group)}={g:g}" if numeric_group else f"{group}={g}"
                )
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel(_axis_name(x) + (" (log scale)" if log_x else ""))
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("log", base=2 if x == "beta" and max(xs_all) / min(xs_all) < 10 else 10)
            if len(xs_all) <= 8:
                ax.set_xticks(xs_all, [f"{v:g}" for v in xs_all])
                ax.minorticks_off()
        elif len(xs_all) <= 12 and all(float(v).is_integer() for v in xs_all):
            ax.set_xticks(xs_all)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if group and len(groups) > 1:
        axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"final metrics against {_axis_name(x)} (test split, best checkpoint; nats per example)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_tradeoff(rows: list[dict[str, Any]], path: Path) -> None:
    """Reconstruction against disentanglement: one point per job, labelled by its β."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for ld in _values(rows, "latent_dim") or [None]:
        points = [r for r in rows if (ld is None or r.get("latent_dim") == ld) and _is_number(r.get("mig"))]
        if not points:
            continue
        ax.scatter([r["mig"] for r in points], [r["test_recon"] for r in points], label=f"latent_dim={ld}")
        for r in points:
            if _is_number(r.get("beta")):
                ax.annotate(
                    f"β={r['beta']:g}",
                    (r["mig"], r["test_recon"]),
                    fontsize=8,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel("MIG (higher: more disentangled)")
    ax.set_ylabel("reconstruction, nats per example (lower: better)")
    ax.set_title("reconstruction against disentanglement")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(row: dict[str, Any], params: list[str]) -> str:
    parts = [
        f"{'β' if k == 'beta' else k}={row[k]:g}" if _is_number(row.get(k)) else f"{k}={row.get(k)}"
        for k in params
    ]
    return f"job {row['job']}: " + " ".join(parts) if parts else f"job {row['job']}"


def job_samples(job_dir: Path, n: int, seed: int, device: str) -> torch.Tensor | None:
    """n prior samples (n, C, H, W) in [0, 1] from a job's best checkpoint (else its last), or None."""
    from vae_cli.api import load_model

    try:
        model = load_model(job_dir, device)
    except Exception as e:  # noqa: BLE001  a missing or unreadable checkpoint leaves a blank panel
        log.warning("no samples for %s: %s", job_dir, e)
        return None
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        return model.sample(n, generator=generator).float().clamp(0, 1).cpu()


def draw_samples(
    rows: list[dict[str, Any]], folder: Path, path: Path, n: int, seed: int, device: str
) -> Path | None:
    """One panel of prior samples per finished job (the same codes for jobs with the same latent_dim);
    laid out latent_dim by β when the sweep is such a grid."""
    from torchvision.utils import make_grid

    params = param_columns(rows)
    varying = [k for k in params if len({str(r.get(k)) for r in rows}) > 1] or params
    lds, betas = _values(rows, "latent_dim"), _values(rows, "beta")
    pairs = [(r.get("latent_dim"), r.get("beta")) for r in rows]
    as_grid = (
        len(set(pairs)) == len(rows)
        and len(lds) * len(betas) <= 2 * len(rows)
        and len(lds) > 0
        and len(betas) > 0
    )
    if as_grid:
        nrows, ncols = len(lds), len(betas)
        place = {i: lds.index(r["latent_dim"]) * ncols + betas.index(r["beta"]) for i, r in enumerate(rows)}
    else:
        ncols = math.ceil(math.sqrt(len(rows)))
        nrows = math.ceil(len(rows) / ncols)
        place = {i: i for i in range(len(rows))}
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    drawn = 0
    per_row = max(1, round(math.sqrt(n)))
    for i, row in enumerate(rows):
        ax = axes.flat[place[i]]
        ax.set_title(_label(row, varying), fontsize=8)
        images = job_samples(folder / str(row["folder"]), n, seed, device)
        if images is None:
            ax.text(0.5, 0.5, "no checkpoint", ha="center", va="center", transform=ax.transAxes)
            continue
        grid = make_grid(images, nrow=per_row, padding=1, pad_value=0.5)
        if images.shape[1] == 1:
            ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(grid.permute(1, 2, 0).numpy())
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle("prior samples from each job's best checkpoint")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
