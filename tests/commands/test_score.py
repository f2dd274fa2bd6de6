"""`vae score` (vae_cli/commands/score.py) end to end on tiny data with planted outliers, and
`vae reconstruct noise_level=`.

Two tiny models are trained once for the module, in this process: an MLP on a folder of near-constant
dark images, and an MLP with a Gaussian likelihood on standardised CSV rows. Each is then asked to score
inputs where a few very different examples were planted; they must come out on top. The commands that
must fail run in child processes forked from this one, each with its own exit code and stderr.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli import Result, one_error, run_all, vae_all
from tests.helpers.data import png_size

SIZE = 8


TINY_MLP = [
    "model=mlp",
    "model.hidden_dims=[32]",
    "latent_dim=2",
    "train.batch_size=16",
    "train.image_every=0",
]


NUM_OUTLIERS = 3


def dark_image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 30, size=(SIZE + 4, SIZE + 4), dtype=np.uint8)


def write_images(root: Path) -> tuple[Path, Path]:
    """train/: 64 near-black images. score/normal/: 12 more of them (and a broken file), score/outlier/:
    bright checkerboards."""
    rng = np.random.default_rng(0)
    train = root / "train"
    train.mkdir(parents=True)
    for i in range(64):
        Image.fromarray(dark_image(rng)).save(train / f"{i:02d}.png")
    normal, outlier = root / "score" / "normal", root / "score" / "outlier"
    normal.mkdir(parents=True)
    outlier.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(dark_image(rng)).save(normal / f"{i:02d}.png")
    (normal / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    board = (np.indices((SIZE + 4, SIZE + 4)).sum(0) % 2 * 255).astype(np.uint8)
    for i in range(NUM_OUTLIERS):
        Image.fromarray(np.maximum(board, 200 - 20 * i).astype(np.uint8)).save(outlier / f"odd{i}.png")
    return train, root / "score"


def write_tables(root: Path) -> tuple[Path, Path]:
    """train.csv: 150 rows of 4 correlated features. score.csv: 30 more rows, with NUM_OUTLIERS planted
    far off, and a flag column (1 = planted)."""
    rng = np.random.default_rng(1)

    def rows(n: int) -> np.ndarray:
        t = rng.normal(size=(n, 1))
        return np.hstack([t, 2 * t + 5, -t, 0.5 * t + 100]) + 0.05 * rng.normal(size=(n, 4))

    root.mkdir(parents=True, exist_ok=True)
    train, score = root / "train.csv", root / "score.csv"
    with open(train, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "d"])
        writer.writerows(rows(150).round(5).tolist())
    x = rows(30)
    planted = [4, 17, 25]
    x[planted] = x[planted] * np.array([1, -1, 1, 1]) + np.array([0, 0, 6, 0])  # break the correlations
    with open(score, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "d", "flag"])
        writer.writerows([[*row, int(i in planted)] for i, row in enumerate(x.round(5).tolist())])
    (root / "bad.csv").write_text("a,b,c,d\n1,2,3,4\n1,2,three,4\n")
    (root / "nan.csv").write_text("a,b,c,d\n1,2,3,4\n1,2,nan,4\n")
    (root / "no_c.csv").write_text("a,b,d,flag\n1,2,4,0\n")
    (root / "renamed.csv").write_text("a,b,cc,d\n1,2,3,4\n")
    np.save(root / "narrow.npy", x[:, :3].astype(np.float32))  # 3 features, not 4
    with open(root / "reordered.csv", "w", newline="") as f:  # score.csv's columns in another order
        writer = csv.writer(f)
        writer.writerow(["flag", "d", "c", "b", "a"])
        writer.writerows([[int(i in planted), *row[::-1]] for i, row in enumerate(x.round(5).tolist())])
    return train, score


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("score")
    train_images, score_images = write_images(root / "images")
    train_table, score_table = write_tables(root / "tables")
    np.save(root / "small_images.npy", np.zeros((4, SIZE - 2, SIZE - 2), dtype=np.uint8))  # 6x6, not 8x8
    trained = vae_all(
        {
            "images": [
                "train",
                "dataset=image_folder",
                f"dataset.path={train_images}",
                f"dataset.image_size={SIZE}",
                "dataset.channels=1",
                "train.epochs=4",
                "train.lr=1e-2",
                *TINY_MLP,
            ],
            "table": [
                "train",
                "dataset=tensor",
                f"dataset.path={train_table}",
                "dataset.standardize=true",
                "loss=gaussian",
                "loss.variance=global",
                "train.epochs=8",
                "train.lr=1e-2",
                *TINY_MLP,
            ],
        },
        root / "train",
    )
    for name, result in trained.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
    images = next((root / "train" / "images" / "outputs" / "train").glob("*/*"))
    table = next((root / "train" / "table" / "outputs" / "train").glob("*/*"))
    tables = root / "tables"
    commands = {
        "images": ["score", f"ckpt={images}", f"input={score_images}", "anomaly_class=outlier", "n=3"],
        "images_iwae": [
            "score",
            f"ckpt={images}",
            f"input={score_images}",
            "normal_class=normal",
            "iwae_k=16",
        ],
        "images_split": ["score", f"ckpt={images}", "input=test"],
        "table": ["score", f"ckpt={table}", f"input={score_table}", "label_column=flag"],
        "table_reordered": [
            "score",
            f"ckpt={table}",
            f"input={tables / 'reordered.csv'}",
            "label_column=flag",
        ],
        "table_split": ["score", f"ckpt={table}", "input=val", "max_examples=5"],
        "denoise": ["reconstruct", f"ckpt={images}", "n=4", "nrow=4", "noise_level=0.3", "noise=mask"],
    }
    bad_input = {  # one line, exit code 2, no traceback
        "missing": ["score", f"ckpt={images}", f"input={root / 'nowhere'}"],
        "unlabelled": ["score", f"ckpt={images}", "input=test", "anomaly_class=1"],
        "both": ["score", f"ckpt={images}", "anomaly_class=1", "normal_class=0"],
        "vectors_given_images": ["score", f"ckpt={table}", f"input={score_images}"],
        "wrong_width": ["score", f"ckpt={table}", f"input={score_table}"],
        "bad_csv": ["score", f"ckpt={table}", f"input={tables / 'bad.csv'}"],
        "nan_cell": ["score", f"ckpt={table}", f"input={tables / 'nan.csv'}"],
        "missing_column": ["score", f"ckpt={table}", f"input={tables / 'no_c.csv'}", "label_column=flag"],
        "renamed_column": ["score", f"ckpt={table}", f"input={tables / 'renamed.csv'}"],
        "feature_count": ["score", f"ckpt={table}", f"input={tables / 'narrow.npy'}"],
        "image_size": ["score", f"ckpt={images}", f"input={root / 'small_images.npy'}"],
        "table_given_to_images": ["score", f"ckpt={images}", f"input={score_table}"],
        "unknown_class": ["score", f"ckpt={images}", f"input={score_images}", "anomaly_class=weird"],
    }
    return {"root": root / "runs", **vae_all(commands, root / "runs"), **run_all(bad_input, root / "runs")}


def ok(runs: dict, name: str) -> tuple[Result, Path]:
    result = runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (folder,) = (runs["root"] / name / "outputs").glob("*/*/*")
    return result, folder


def read_scores(folder: Path) -> list[dict[str, str]]:
    with open(folder / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_planted_outlier_images_rank_first_with_perfect_auc(runs) -> None:
    result, folder = ok(runs, "images")
    rows = read_scores(folder)
    assert len(rows) == 12 + NUM_OUTLIERS  # the broken file is skipped, with a warning
    assert "skipped 1 unreadable" in result.stderr and "broken.png" in result.stderr
    assert {r["name"] for r in rows[:NUM_OUTLIERS]} == {f"outlier/odd{i}.png" for i in range(NUM_OUTLIERS)}
    assert [r["anomalous"] for r in rows] == ["1"] * NUM_OUTLIERS + ["0"] * 12
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in rows] == [
        str(i) for i in range(1, 16)
    ]
    assert {"index", "neg_elbo", "recon", "kl", "recon_error", "label"} <= set(rows[0])
    for r in rows:
        assert float(r["neg_elbo"]) == pytest.approx(float(r["recon"]) + float(r["kl"]), rel=1e-4, abs=1e-3)
    metrics = json.loads((folder / "score_metrics.json").read_text())
    assert metrics["roc_auc"] == 1.0 and metrics["average_precision"] == 1.0
    assert metrics["num_anomalous"] == NUM_OUTLIERS and metrics["num_normal"] == 12
    assert "ROC AUC" in result.stderr
    # 3 most anomalous above their reconstructions, then the 3 least anomalous above theirs: cells of
    # 8-px images scaled 8 times, and labels around them
    width, height = png_size(folder / "extremes.png")
    assert width > 8 * (3 * (SIZE + 2) + 2) and height > 8 * (4 * (SIZE + 2) + 2)


def test_iwae_scores_and_normal_class(runs) -> None:
    _, folder = ok(runs, "images_iwae")
    rows = read_scores(folder)
    assert "iwae_nll" in rows[0] and all(r["score"] == r["iwae_nll"] for r in rows)
    for r in rows:  # the importance-weighted estimate is never above -ELBO's sampled terms by much
        assert float(r["iwae_nll"]) <= float(r["neg_elbo"]) + 1.0
    metrics = json.loads((folder / "score_metrics.json").read_text())
    assert (
        metrics["roc_auc"] == 1.0 and metrics["iwae_k"] == 16 and metrics["ground_truth"] == "normal: normal"
    )


def test_a_split_of_the_training_folder_without_labels(runs) -> None:
    result, folder = ok(runs, "images_split")
    rows = read_scores(folder)
    assert len(rows) == 6 and "label" not in rows[0] and "anomalous" not in rows[0]  # 10% of 64 images
    metrics = json.loads((folder / "score_metrics.json").read_text())
    assert "roc_auc" not in metrics and math.isfinite(metrics["mean_score"])


def test_planted_outlier_rows_rank_first_with_a_label_column(runs) -> None:
    result, folder = ok(runs, "table")
    rows = read_scores(folder)
    assert len(rows) == 30 and {r["name"] for r in rows[:3]} == {"4", "17", "25"}
    assert all(r["anomalous"] == r["label"] for r in rows)  # 0/1 labels: 1 marks the anomalies
    metrics = json.loads((folder / "score_metrics.json").read_text())
    assert metrics["roc_auc"] == 1.0 and metrics["ground_truth"] == "anomalies: label 1"
    assert not (folder / "extremes.png").exists()  # vectors: no image grid


def test_a_table_with_its_columns_in_another_order_is_matched_by_name(runs) -> None:
    _, folder = ok(runs, "table")
    _, reordered = ok(runs, "table_reordered")
    assert read_scores(reordered) == read_scores(folder)


def test_a_split_of_tensor_data_and_max_examples(runs) -> None:
    _, folder = ok(runs, "table_split")
    rows = read_scores(folder)
    assert len(rows) == 5 and sorted(int(r["index"]) for r in rows) == list(range(5))


def test_reconstruct_with_noise_shows_originals_noisy_and_reconstructions(runs) -> None:
    result, folder = ok(runs, "denoise")
    assert png_size(folder / "reconstructions.png") == (8 * (4 * (SIZE + 2) + 2), 8 * (3 * (SIZE + 2) + 2))
    assert "mask noise at level 0.3" in result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "does not exist"),
        ("unlabelled", "needs labelled input"),
        ("both", "not both"),
        ("vectors_given_images", "trained on vectors of 4 features"),
        (
            "wrong_width",
            "has the column 'flag' that training did not have: drop it, or name the label column (label_column=flag)",
        ),
        ("bad_csv", "line 3, column 'c': 'three' is not a number"),
        ("nan_cell", "line 3, column 'c': 'nan' is not a finite number"),
        ("missing_column", "lacks the column 'c' that the model was trained on"),
        (
            "renamed_column",
            "lacks the column 'c' that the model was trained on (it has 'cc', which training did not)",
        ),
        ("feature_count", "narrow.npy has 3 features per example, the model was trained on 4 features"),
        ("image_size", "small_images.npy holds 1x6x6 images, the model takes 1x8x8 images (C x H x W)"),
        ("table_given_to_images", "score.csv holds 5 features, the model takes 1x8x8 images (C x H x W)"),
        ("unknown_class", "unknown label 'weird': the labels are normal, outlier"),
    ],
)
def test_bad_input_gives_one_line_error(runs, name: str, message: str) -> None:
    result = runs[name]
    assert message in one_error(result.returncode, result.stderr), result.stderr
