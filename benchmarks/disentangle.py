"""Disentanglement on `dataset=synthetic`: the β-VAE (β = 1, 4), β-TCVAE, FactorVAE, DIP-VAE-I, the
capacity-annealed β-VAE and InfoVAE (WAE-MMD), trained at one shared budget, in one run.

    .venv/bin/python benchmarks/disentangle.py            # what `make bench-disentangle` runs (~15-20 min on 2 cores)
    .venv/bin/python benchmarks/disentangle.py --quick    # smoke run: 1,200 images, 1 epoch, 1 seed (about a minute)
    .venv/bin/python benchmarks/disentangle.py --seeds 3 --epochs 10
    .venv/bin/python benchmarks/disentangle.py --work runs/ --reuse   # continue a run: only the runs missing

Every run is `vae train` in this process, its config composed by Hydra's compose API exactly as the
command line composes it: BUDGET (below), then the objective's overrides (OBJECTIVES), then `seed=<s>`
for s = 0 .. --seeds - 1 (the seed of the weights, the batches and the draws; the images are the same in
every run, dataset.seed's default). The budget, shared by every objective:

    dataset=synthetic   its defaults: 6,000 dSprites-like 32x32 shapes (4,000 train, 1,000 validation,
                        1,000 test), five ground-truth factors (shape, scale, rotation, x, y)
    model=conv latent_dim=10 train.epochs=8 train.image_every=0   (the conv VAE, batch 128, Adam 1e-3;
                        10 latent dimensions, as in disentanglement_lib)

and the objectives (each with its schema's defaults, vae_cli/config/objectives.py, unless named here):

    β-VAE β=1           objective=elbo beta=1 (the plain VAE)
    β-VAE β=4           objective=elbo beta=4 (Higgins et al. 2017)
    β-TCVAE             objective=btcvae: alpha=1, beta=6 on the total correlation, gamma=1 (Chen et al.
                        2018), q(z) by minibatch stratified sampling
    FactorVAE           objective=factor objective.hidden=256 objective.layers=3: gamma=10 (Kim & Mnih
                        2018), with a discriminator of 3 x 256 units instead of the paper's 6 x 1000 (its
                        default), which would cost a CPU more than the VAE itself
    DIP-VAE-I           objective=dip objective.variant=i: lambda_od=10, lambda_d=100 (Kumar et al. 2018)
    capacity β-VAE      objective=capacity: C grows from 0 to 25 nats over the whole run, gamma=1000
                        (Burgess et al. 2018)
    InfoVAE (WAE-MMD)   objective=mmd: lambda_mmd=1000, IMQ kernel, alpha=1 (no KL term; Zhao et al.
                        2019, Tolstikhin et al. 2018)

What each run reports is training's own (metrics.json: the best checkpoint by its validation loss, on the
1,000 test images): the reconstruction -log p(x|z) and the KL(q(z|x) || p(z)) in nats per example (z ~
q(z|x) once), the MIG (Chen et al. 2018) and DCI disentanglement, completeness and informativeness
(Eastwood & Williams 2018; a random forest per factor, vae_cli/metrics.py's `dci`) of the posterior means
against the factors, and the run's wall time (metrics.json's wall_time_s: the data, the training and the
test pass). The table gives, per objective, the mean ± standard deviation (over the seeds, ddof=0) of
each; then the same as Markdown, for benchmarks/README.md. Each run's folder also holds the
`.hydra/overrides.yaml` and `.hydra/config.yaml` of a sweep's job, so that `vae report <work folder>`
(with --work) draws the runs as one sweep: by_beta.png with a colour per objective, tradeoff.png.

--quick: 1,200 images (800 train, 200 validation, 200 test), 1 epoch, 1 seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

#: What every run shares (after it, the objective's overrides and the seed)
BUDGET = ["dataset=synthetic", "model=conv", "latent_dim=10", "train.epochs=8", "train.image_every=0"]
#: --quick: a smaller set and a single epoch, on top of BUDGET
QUICK = ["dataset.size=1200", "dataset.val_size=200", "dataset.test_size=200", "train.epochs=1"]
#: objective (as the table names it) -> its overrides
OBJECTIVES: dict[str, list[str]] = {
    "β-VAE β=1": ["objective=elbo", "beta=1"],
    "β-VAE β=4": ["objective=elbo", "beta=4"],
    "β-TCVAE": ["objective=btcvae"],
    "FactorVAE": ["objective=factor", "objective.hidden=256", "objective.layers=3"],
    "DIP-VAE-I": ["objective=dip", "objective.variant=i"],
    "capacity β-VAE": ["objective=capacity"],
    "InfoVAE (WAE-MMD)": ["objective=mmd"],
}
#: column -> (the key in metrics.json's "test" section, or the top level's wall_time_s; digits shown)
COLUMNS = {
    "recon (nats)": ("recon", 1),
    "KL (nats)": ("kl", 1),
    "MIG": ("mig", 3),
    "DCI disentanglement": ("dci_disentanglement", 3),
    "DCI completeness": ("dci_completeness", 3),
    "DCI informativeness": ("dci_informativeness", 3),
    "wall time (s)": ("wall_time_s", 0),
}

#: --reuse: a run whose metrics.json is already in the work folder is read back, not trained again
REUSE = False


def budget_overrides(quick: bool, epochs: int | None = None) -> list[str]:
    """What every run of this benchmark shares: BUDGET, QUICK's smaller set with --quick, --epochs."""
    merged: dict[str, str] = {}  # key -> override: a later one replaces an earlier one of the same key
    for override in [*BUDGET, *(QUICK if quick else []), *([f"train.epochs={epochs}"] if epochs else [])]:
        merged[override.split("=", 1)[0]] = override
    return list(merged.values())


def run_overrides(objective: str, seed: int, quick: bool, epochs: int | None = None) -> list[str]:
    """The `vae train` overrides of one run."""
    return [*budget_overrides(quick, epochs), *OBJECTIVES[objective], f"seed={seed}"]


def train_run(overrides: list[str], folder: Path) -> dict:
    """`vae train <overrides>` into `folder`, in this process: its metrics.json. The folder gets the
    `.hydra/overrides.yaml` and `.hydra/config.yaml` a sweep's job has, so that `vae report <work
    folder>` reads the runs as one sweep. A user error (a key the schemas refuse, say) stops the
    benchmark with its one line."""
    from omegaconf import OmegaConf

    from vae_cli.cli import compose_config
    from vae_cli.console import quiet
    from vae_cli.errors import VaeError
    from vae_cli.io import write_text
    from vae_cli.training.loop import train

    if REUSE and (folder / "metrics.json").is_file():
        return json.loads((folder / "metrics.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)  # no checkpoints of an unfinished run to start from
    try:
        cfg = compose_config(overrides)
        write_text(folder / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
        write_text(folder / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
        with quiet():
            return train(cfg, folder)
    except VaeError as e:
        sys.exit(f"vae train {' '.join(overrides)} failed: {e}")


def numbers(metrics: dict) -> dict[str, float]:
    """A run's numbers, by COLUMNS' keys (NaN where the run has none: no factors, too few codes)."""
    test = metrics.get("test", {})
    row = {}
    for key, _ in COLUMNS.values():
        value = metrics.get(key) if key == "wall_time_s" else test.get(key)
        row[key] = float(value) if isinstance(value, int | float) else float("nan")
    return row


def run_all(objectives: list[str], seeds: int, quick: bool, epochs: int | None, work: Path) -> dict:
    """objective -> [numbers(run) per seed], printing a line per run as it ends."""
    results: dict[str, list[dict[str, float]]] = {}
    for objective in objectives:
        results[objective] = []
        for seed in range(seeds):
            folder = work / run_folder(objective, seed)
            row = numbers(train_run(run_overrides(objective, seed, quick, epochs), folder))
            results[objective].append(row)
            print(
                f"  {objective} seed {seed}: recon {row['recon']:.1f}, KL {row['kl']:.1f}, "
                f"MIG {row['mig']:.3f}, DCI {row['dci_disentanglement']:.3f} ({row['wall_time_s']:.0f} s)",
                flush=True,
            )
    return results


def run_folder(objective: str, seed: int) -> str:
    """A run's folder in the work folder, `<job>_<objective>_s<seed>` (`102_beta-TCVAE_s2`): the job
    number, 100 x the objective's place in OBJECTIVES + the seed, orders `vae report`'s rows."""
    name = objective.replace("β", "beta").replace("=", "").replace(" ", "_")
    name = "".join(c for c in name if c.isalnum() or c in "-_")
    return f"{100 * list(OBJECTIVES).index(objective) + seed:03d}_{name}_s{seed}"


def mean_sd(values: list[float], digits: int) -> str:
    """`mean ± sd` over the seeds (ddof=0), the mean alone for one seed; `n/a` when none is a number."""
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "n/a"
    mean = f"{np.mean(finite):.{digits}f}"
    return mean if len(finite) == 1 else f"{mean} ± {np.std(finite):.{digits}f}"


def cells(rows: list[dict[str, float]]) -> list[str]:
    return [mean_sd([r[key] for r in rows], digits) for key, digits in COLUMNS.values()]


def results_table(results: dict, title: str) -> Table:
    table = Table(
        title=title,
        caption="test split, best checkpoint by validation loss; mean ± sd over seeds; nats per example",
    )
    table.add_column("objective")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for objective, rows in results.items():
        table.add_row(objective, *cells(rows))
    return table


def markdown(results: dict) -> str:
    lines = ["| objective | overrides | " + " | ".join(COLUMNS) + " |"]
    lines.append("| --- | --- |" + " ---: |" * len(COLUMNS))
    for objective, rows in results.items():
        lines.append(
            f"| {objective} | `{' '.join(OBJECTIVES[objective])}` | " + " | ".join(cells(rows)) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,200 images, 1 epoch, 1 seed (about a minute)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per objective (default 2)")
    parser.add_argument("--epochs", type=int, help="train.epochs of every run (default: BUDGET's 8)")
    parser.add_argument(
        "--objectives", default=",".join(OBJECTIVES), help="the objectives to run, comma-separated"
    )
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--reuse", action="store_true", help="with --work: read back the runs already there, train the rest"
    )
    args = parser.parse_args(argv)
    objectives = [o for o in args.objectives.split(",") if o]
    if unknown := [o for o in objectives if o not in OBJECTIVES]:
        parser.error(f"unknown objective {unknown[0]!r}: choose from {', '.join(OBJECTIVES)}")
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--seeds and --epochs must be at least 1")
    global REUSE
    REUSE = args.reuse and args.work is not None
    seeds = 1 if args.quick else args.seeds
    work = args.work or Path(tempfile.mkdtemp(prefix="vae-disentangle-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    budget = budget_overrides(args.quick, args.epochs)
    print(
        f"vae disentanglement benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; runs in {work}",
        flush=True,
    )
    print(f"vae train {' '.join(budget)} <objective> seed=0..{seeds - 1}", flush=True)
    started = time.perf_counter()
    try:
        results = run_all(objectives, seeds, args.quick, args.epochs, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    title = f"dataset=synthetic, {' '.join(b for b in budget if b != 'dataset=synthetic')}, {seeds} seed(s)"
    print()
    Console(width=max(160, shutil.get_terminal_size().columns)).print(results_table(results, title))
    print(f"\n{title}\n\n{markdown(results)}")
    if args.work is not None:
        print(f"\nvae report {work}   (summary.csv and plots of these runs, as of a sweep)")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
