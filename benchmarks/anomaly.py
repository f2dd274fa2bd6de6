"""Anomaly detection: `vae` against PyOD's VAE, PyOD's AutoEncoder and IsolationForest, on the same data
and the same protocol, in one run.

    .venv/bin/python benchmarks/anomaly.py            # what `make bench-anomaly` runs (tens of minutes)
    .venv/bin/python benchmarks/anomaly.py --quick    # smoke run: 2 tables, 1 seed, 1 held-out class, 1 epoch
    .venv/bin/python benchmarks/anomaly.py --only tables --seeds 5
    .venv/bin/python benchmarks/anomaly.py --work runs/ --reuse   # continue a long run: only what is missing

PyOD is a benchmark-only dependency: `pip install -e '.[bench]'` (or `pip install pyod`).

Tables (built offline from scikit-learn's bundled datasets; a minority class subsampled to about 5% of
the rows, drawn afresh for each seed):

    breast_cancer   569 tumours, 30 features: benign rows, plus malignant ones as the anomalies
    wine            178 wines, 13 features: cultivars 1 and 2, plus cultivar 0 as the anomalies
    digits          1,797 8x8 digits as 64 features: digits 1-9, plus zeros as the anomalies
    planted         400 rows of 6 standard-normal features, 5 of them shifted by +12 in every feature

Every detector trains on all rows and scores all rows, unsupervised (the labels only grade the
ranking), as PyOD's detectors are used: `vae` through its command line (the commands of
docs/own-data.md, TABLE_TRAIN and TABLE_SCORE below: `vae train` on every row, no validation or test
split, and `vae score input=<the csv>` of every row), PyOD's VAE and
AutoEncoder with their defaults, scikit-learn's IsolationForest with its defaults. ROC AUC and average
precision (scikit-learn's) per set, mean and standard deviation over the seeds.

Images: Fashion-MNIST with each class held out in turn. `vae train` on the nine other classes' training
images (IMAGE_TRAIN, with its background model), then `vae score` of the 10,000 test images with each
image score (neg_elbo, complexity, likelihood_ratio, latent); the held-out class is the anomaly. IsolationForest
on the same training images' pixels as the reference (PyOD's VAE and AutoEncoder on 54,000 images with
their defaults take hours on a CPU: --pyod-images adds them).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

from vae_cli.data.mnist import FASHION_MNIST_CLASSES  # noqa: E402

#: `vae train` for a table (after dataset=tensor dataset.path=<csv> dataset.label_column=label): the
#: command docs/own-data.md recommends for tables
TABLE_TRAIN = ["dataset.val_fraction=0", "dataset.test_fraction=0"]
#: `vae score` for a table (after ckpt=<run> input=<csv> label_column=label)
TABLE_SCORE: list[str] = []
#: `vae train` for a Fashion-MNIST class held out (after dataset=fashion_mnist dataset.exclude_classes=[c]):
#: the command docs/own-data.md recommends for images, with the background model of score=likelihood_ratio
IMAGE_TRAIN = [
    "dataset.binarize=none",
    "loss=logistic",
    "model=mlp",
    "train.epochs=5",
    "train.background=true",
]
#: the image scores compared, each a `vae score score=<name>` of the same run
IMAGE_SCORES = ("neg_elbo", "complexity", "likelihood_ratio", "latent")
TABLE_SETS = ("breast_cancer", "wine", "digits", "planted")
ANOMALY_SHARE = 0.05
PLANTED = 5  # gross outliers in the planted set


def need_pyod() -> None:
    try:
        import pyod  # noqa: F401
    except ImportError:
        sys.exit(
            "benchmarks/anomaly.py compares vae with PyOD, which is not installed: "
            "pip install -e '.[bench]'  (or: pip install pyod)"
        )


# --- the tables --------------------------------------------------------------------------------------------


def minority_as_anomalies(
    x: np.ndarray, y: np.ndarray, anomalous: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every normal row plus a random subset of the anomalous ones, ANOMALY_SHARE of the result."""
    rng = np.random.default_rng(seed)
    normal, odd = np.flatnonzero(~anomalous), np.flatnonzero(anomalous)
    count = max(1, round(ANOMALY_SHARE * len(normal) / (1 - ANOMALY_SHARE)))
    picked = np.sort(np.concatenate([normal, rng.choice(odd, size=min(count, len(odd)), replace=False)]))
    return x[picked].astype(np.float64), anomalous[picked].astype(int)


def table(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, D), labels (N,) with 1 = anomalous) of one tabular set, drawn with `seed`."""
    from sklearn import datasets

    if name == "breast_cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
        return minority_as_anomalies(x, y, y == 0, seed)  # target 0 is malignant
    if name == "wine":
        x, y = datasets.load_wine(return_X_y=True)
        return minority_as_anomalies(x, y, y == 0, seed)
    if name == "digits":
        x, y = datasets.load_digits(return_X_y=True)
        return minority_as_anomalies(x, y, y == 0, seed)
    if name == "planted":
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(400, 6))
        labels = np.zeros(400, dtype=int)
        where = rng.choice(400, size=PLANTED, replace=False)
        x[where] += 12.0
        labels[where] = 1
        return x, labels
    raise ValueError(f"unknown table {name!r}: choose from {', '.join(TABLE_SETS)}")


def write_table(path: Path, x: np.ndarray, labels: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(x.shape[1])] + ["label"])
        for row, label in zip(x.tolist(), labels.tolist(), strict=True):
            writer.writerow([f"{v:.8g}" for v in row] + [label])


# --- the detectors -----------------------------------------------------------------------------------------


#: --reuse: a command whose output is already in the work folder is not run again (a long run continued)
REUSE = False


def vae_command(args: list[str], cwd: Path, output: str | None = None) -> None:
    """`vae <args>` in a fresh process, as a user runs it; stops the benchmark with its error if it fails.
    With --reuse, skipped when `output` (a file under cwd that the command writes last) already exists."""
    if REUSE and output is not None and (cwd / output).is_file():
        return
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "vae_cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"vae {' '.join(args)} failed in {cwd}:\n{result.stderr[-3000:]}")


def read_scores(path: Path, n: int) -> np.ndarray:
    """scores.csv's `score` column, back in input order (its `index`)."""
    scores = np.full(n, np.nan)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            scores[int(row["index"])] = float(row["score"])
    return scores


def vae_on_table(x: np.ndarray, labels: np.ndarray, seed: int, folder: Path) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "table.csv"
    write_table(data, x, labels)
    train = ["train", "dataset=tensor", f"dataset.path={data}", "dataset.label_column=label", *TABLE_TRAIN]
    vae_command(
        [*train, f"seed={seed}", f"dataset.seed={seed}", "hydra.run.dir=run"], folder, "run/metrics.json"
    )
    vae_command(
        ["score", "ckpt=run", f"input={data}", "label_column=label", *TABLE_SCORE, "out=score"],
        folder,
        "score/score_metrics.json",
    )
    return read_scores(folder / "score" / "scores.csv", len(x))


def pyod_vae(x: np.ndarray, seed: int) -> np.ndarray:
    from pyod.models.vae import VAE

    return VAE(random_state=seed, verbose=0).fit(x).decision_scores_


def pyod_autoencoder(x: np.ndarray, seed: int) -> np.ndarray:
    from pyod.models.auto_encoder import AutoEncoder

    return AutoEncoder(random_state=seed, verbose=0).fit(x).decision_scores_


def isolation_forest(x: np.ndarray, seed: int, score: np.ndarray | None = None) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=seed).fit(x)
    return -forest.score_samples(x if score is None else score)


def grade(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(roc_auc_score(labels, scores)), float(average_precision_score(labels, scores))


# --- the runs ----------------------------------------------------------------------------------------------

TABLE_DETECTORS = ("vae", "PyOD VAE", "PyOD AutoEncoder", "IsolationForest")


def run_tables(
    sets: tuple[str, ...], seeds: int, work: Path
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """set -> detector -> [(ROC AUC, AP) per seed]; also how often the planted outliers come first."""
    import torch

    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    planted_first: dict[str, int] = dict.fromkeys(TABLE_DETECTORS, 0)
    for name in sets:
        results[name] = {d: [] for d in TABLE_DETECTORS}
        for seed in range(seeds):
            x, labels = table(name, seed)
            torch.manual_seed(seed)
            detectors: dict[str, Callable[[], np.ndarray]] = {
                "vae": partial(vae_on_table, x, labels, seed, work / "tables" / name / str(seed)),
                "PyOD VAE": partial(pyod_vae, x, seed),
                "PyOD AutoEncoder": partial(pyod_autoencoder, x, seed),
                "IsolationForest": partial(isolation_forest, x, seed),
            }
            scores, seconds = {}, {}
            for detector, run in detectors.items():
                started = time.perf_counter()
                scores[detector] = run()
                seconds[detector] = time.perf_counter() - started
            for detector, values in scores.items():
                results[name][detector].append(grade(values, labels))
                if name == "planted":
                    top = np.argsort(-values, kind="stable")[: labels.sum()]
                    planted_first[detector] += int(labels[top].all())
            print(
                f"  {name} seed {seed}: {len(x)} rows, {labels.sum()} anomalies, "
                + ", ".join(
                    f"{d} {results[name][d][-1][0]:.3f} ({seconds[d]:.0f} s)" for d in TABLE_DETECTORS
                ),
                flush=True,
            )
    results["_planted_first"] = planted_first  # type: ignore[assignment]
    return results


def fashion_data(held_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vae's own splits (the same as `vae train` builds): train pixels of the nine classes, test pixels,
    and the test labels marking the held-out class."""
    from vae_cli.config.legacy import saved_section
    from vae_cli.data import create_dataset

    cfg = saved_section("dataset", {"name": "fashion_mnist", "exclude_classes": [str(held_out)]})
    data = create_dataset(cfg, os.environ.get("VAE_DATA_DIR", "data"))
    train = data.train.images.flatten(1).float().div(255).numpy()
    test = data.test.images.flatten(1).float().div(255).numpy()
    return train, test, (data.test.labels == held_out).int().numpy()


def run_images(
    classes: list[int], work: Path, quick: bool, pyod_images: bool
) -> dict[int, dict[str, tuple[float, float]]]:
    """held-out class -> detector (vae's scores, IsolationForest, ...) -> (ROC AUC, AP)."""
    results: dict[int, dict[str, tuple[float, float]]] = {}
    extra = ["train.epochs=1"] if quick else []
    limit = ["max_examples=2000"] if quick else []
    for c in classes:
        started = time.perf_counter()
        folder = work / "images" / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        train = ["train", "dataset=fashion_mnist", f"dataset.exclude_classes=[{c}]", *IMAGE_TRAIN, *extra]
        vae_command([*train, "hydra.run.dir=run"], folder, "run/background/metrics.json")
        train_x, test_x, labels = fashion_data(c)
        if quick:
            test_x, labels = test_x[:2000], labels[:2000]
        row = {}
        for name in IMAGE_SCORES:
            out = f"score_{name}"
            vae_command(
                ["score", "ckpt=run", f"score={name}", *limit, f"out={out}"],
                folder,
                f"{out}/score_metrics.json",
            )
            row[f"vae {name}"] = grade(
                read_scores(folder / f"score_{name}" / "scores.csv", len(labels)), labels
            )
        row["IsolationForest"] = grade(isolation_forest(train_x, 0, test_x), labels)
        if pyod_images:
            from pyod.models.auto_encoder import AutoEncoder
            from pyod.models.vae import VAE

            for detector, model in (
                ("PyOD VAE", VAE(verbose=0)),
                ("PyOD AutoEncoder", AutoEncoder(verbose=0)),
            ):
                row[detector] = grade(model.fit(train_x).decision_function(test_x), labels)
        results[c] = row
        print(
            f"  class {c} ({FASHION_MNIST_CLASSES[c]}) held out: "
            + ", ".join(f"{k} {v[0]:.3f}" for k, v in row.items())
            + f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return results


# --- the report --------------------------------------------------------------------------------------------


def print_tables(results: dict, seeds: int) -> None:
    planted_first = results.pop("_planted_first")
    print(
        f"\nTables: ROC AUC (mean ± sd over {seeds} seeds) / average precision (mean); all rows trained on and scored"
    )
    print("| set | rows | anomalies | " + " | ".join(TABLE_DETECTORS) + " |")
    print("| --- | --- | --- |" + " --- |" * len(TABLE_DETECTORS))
    means = {d: [] for d in TABLE_DETECTORS}
    for name, by_detector in results.items():
        x, labels = table(name, 0)
        cells = []
        for detector in TABLE_DETECTORS:
            aucs, aps = zip(*by_detector[detector], strict=True)
            means[detector].append(np.mean(aucs))
            cells.append(f"{np.mean(aucs):.3f} ± {np.std(aucs):.3f} / {np.mean(aps):.3f}")
        best = max(range(len(cells)), key=lambda i: float(cells[i].split()[0]))
        cells[best] = f"**{cells[best]}**"
        print(f"| {name} | {len(x)} | {labels.sum()} | " + " | ".join(cells) + " |")
    print("| mean ROC AUC | | | " + " | ".join(f"{np.mean(means[d]):.3f}" for d in TABLE_DETECTORS) + " |")
    if "planted" in results:
        print(
            f"planted: the {PLANTED} outliers ranked first in "
            + ", ".join(f"{d} {planted_first[d]}/{seeds}" for d in TABLE_DETECTORS)
            + " seeds"
        )


def print_images(results: dict[int, dict[str, tuple[float, float]]]) -> None:
    detectors = list(next(iter(results.values())))
    print(
        "\nFashion-MNIST, each class held out in turn: ROC AUC / average precision on the 10,000 test images"
    )
    print("| held-out class | " + " | ".join(detectors) + " |")
    print("| --- |" + " --- |" * len(detectors))
    for c, row in results.items():
        print(
            f"| {c} {FASHION_MNIST_CLASSES[c]} | "
            + " | ".join(f"{row[d][0]:.3f} / {row[d][1]:.3f}" for d in detectors)
            + " |"
        )
    mean = {
        d: (np.mean([r[d][0] for r in results.values()]), np.mean([r[d][1] for r in results.values()]))
        for d in detectors
    }
    print("| mean | " + " | ".join(f"**{mean[d][0]:.3f}** / {mean[d][1]:.3f}" for d in detectors) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tables, 1 seed, 1 class held out, 1 epoch")
    parser.add_argument("--only", choices=("tables", "images"), help="run one half")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per table (default 3)")
    parser.add_argument("--sets", default=",".join(TABLE_SETS), help="tables, comma-separated")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="Fashion-MNIST classes held out")
    parser.add_argument(
        "--pyod-images", action="store_true", help="also PyOD's VAE and AutoEncoder on images (hours)"
    )
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --work: keep the runs and scores already there, run the rest",
    )
    args = parser.parse_args(argv)
    global REUSE
    REUSE = args.reuse and args.work is not None
    need_pyod()
    sets = tuple(s for s in args.sets.split(",") if s)
    classes = [int(c) for c in args.classes.split(",") if c]
    seeds = args.seeds
    if args.quick:
        sets, seeds, classes = ("planted", "breast_cancer"), 1, classes[-1:]
    work = args.work or Path(tempfile.mkdtemp(prefix="vae-anomaly-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    print(
        f"vae anomaly benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; runs in {work}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        if args.only != "images":
            print(
                f"vae train dataset=tensor dataset.path=<csv> dataset.label_column=label {' '.join(TABLE_TRAIN)}"
            )
            print(f"vae score ckpt=<run> input=<csv> label_column=label {' '.join(TABLE_SCORE)}", flush=True)
            tables = run_tables(sets, seeds, work)
            print_tables(tables, seeds)
        if args.only != "tables":
            print(f"\nvae train dataset=fashion_mnist 'dataset.exclude_classes=[c]' {' '.join(IMAGE_TRAIN)}")
            print(f"vae score ckpt=<run> score={{{','.join(IMAGE_SCORES)}}}", flush=True)
            print_images(run_images(classes, work, args.quick, args.pyod_images))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
