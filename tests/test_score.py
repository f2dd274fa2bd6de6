"""`vae score` end to end on tiny data with planted outliers, `vae reconstruct noise_level=`, and the
ranking metrics (ROC AUC, average precision) as pure functions.

Two tiny models are trained once for the module, in parallel: an MLP on a folder of near-constant dark
images, and an MLP with a Gaussian likelihood on standardised CSV rows. Each is then asked to score
inputs where a few very different examples were planted; they must come out on top.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vae_cli.commands.reconstruct  # noqa: F401  imported before forking, so the children start warm
import vae_cli.commands.score  # noqa: F401
from tests.test_sample_reconstruct_evaluate import Result, png_size, run_all
from vae_cli.metrics import average_precision, roc_auc

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
    return train, score


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("score")
    train_images, score_images = write_images(root / "images")
    train_table, score_table = write_tables(root / "tables")
    trained = run_all(
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
        "table_split": ["score", f"ckpt={table}", "input=val", "max_examples=5"],
        "denoise": ["reconstruct", f"ckpt={images}", "n=4", "nrow=4", "noise_level=0.3", "noise=mask"],
        # bad input: one line, exit code 2, no traceback
        "missing": ["score", f"ckpt={images}", f"input={root / 'nowhere'}"],
        "unlabelled": ["score", f"ckpt={images}", "input=test", "anomaly_class=1"],
        "both": ["score", f"ckpt={images}", "anomaly_class=1", "normal_class=0"],
        "vectors_given_images": ["score", f"ckpt={table}", f"input={score_images}"],
        "wrong_width": ["score", f"ckpt={table}", f"input={score_table}"],
        "bad_csv": ["score", f"ckpt={table}", f"input={tables / 'bad.csv'}"],
        "unknown_class": ["score", f"ckpt={images}", f"input={score_images}", "anomaly_class=weird"],
    }
    return {"root": root / "runs", **run_all(commands, root / "runs")}


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
    # 3 most anomalous above their reconstructions, then the 3 least anomalous above theirs
    assert png_size(folder / "extremes.png") == (3 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)


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


def test_a_split_of_tensor_data_and_max_examples(runs) -> None:
    _, folder = ok(runs, "table_split")
    rows = read_scores(folder)
    assert len(rows) == 5 and sorted(int(r["index"]) for r in rows) == list(range(5))


def test_reconstruct_with_noise_shows_originals_noisy_and_reconstructions(runs) -> None:
    result, folder = ok(runs, "denoise")
    assert png_size(folder / "reconstructions.png") == (4 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2)
    assert "mask noise at level 0.3" in result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "does not exist"),
        ("unlabelled", "needs labelled input"),
        ("both", "not both"),
        ("vectors_given_images", "trained on vectors of 4 features"),
        ("wrong_width", "is the label column named"),
        ("bad_csv", "line 3, column 'c': 'three' is not a number"),
        ("unknown_class", "unknown label 'weird': the labels are normal, outlier"),
    ],
)
def test_bad_input_gives_one_line_error(runs, name: str, message: str) -> None:
    result = runs[name]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


# --- the ranking metrics ---------------------------------------------------------------------------------


def test_roc_auc_and_average_precision_on_known_examples() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)  # P at R=0.5: 1; at R=1: 2/3
    assert roc_auc(torch.tensor([3.0, 2, 1]), torch.tensor([1, 0, 0])) == 1.0
    assert roc_auc(torch.tensor([1.0, 2, 3]), torch.tensor([1, 0, 0])) == 0.0
    assert average_precision(torch.tensor([3.0, 2, 1]), torch.tensor([0, 1, 0])) == pytest.approx(0.5)


def test_ties_count_half_and_enter_the_precision_together() -> None:
    labels = torch.tensor([1, 0, 1, 0])
    same = torch.ones(4)
    assert roc_auc(same, labels) == 0.5
    assert average_precision(same, labels) == 0.5  # one threshold: precision 2/4 at recall 1
    scores = torch.tensor([0.9, 0.8, 0.8, 0.3, 0.2, 0.2, 0.1])
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0])
    assert average_precision(scores, labels) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3 + 1 / 3 * 1 / 2)


def test_roc_auc_equals_the_pairwise_probability_on_random_data() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (300,), generator=g).double()  # many ties
    labels = torch.rand(300, generator=g) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert roc_auc(scores, labels) == pytest.approx(float(pairwise))
    assert roc_auc(-scores, labels) == pytest.approx(1 - float(pairwise))


def test_degenerate_labels_give_nan() -> None:
    assert math.isnan(roc_auc(torch.rand(5), torch.zeros(5)))
    assert math.isnan(roc_auc(torch.rand(5), torch.ones(5)))
    assert math.isnan(average_precision(torch.rand(5), torch.zeros(5)))
    assert average_precision(torch.rand(5), torch.ones(5)) == 1.0
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        roc_auc(torch.rand(3), torch.ones(2))


def test_score_config_composes_validates_and_honours_out(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from vae_cli import config
    from vae_cli.cli import config_dir

    config.register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("score", overrides=["ckpt=run"], return_hydra_config=True)
            config.validate_score_config(cfg)
            assert cfg.input == "test" and cfg.iwae_k == 0 and cfg.hydra.job.name == "score"
            cfg = compose("score", overrides=["ckpt=run", f"out={tmp_path}", "anomaly_class=[7,9]"])
            config.validate_score_config(cfg)
            with pytest.raises(ConfigCompositionException):
                compose("score", overrides=["ckpt=run", "iwae=5"])  # a typo is an error, not a new key
    finally:
        GlobalHydra.instance().clear()
