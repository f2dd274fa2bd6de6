"""Classes are named and checked: the built-in datasets' label names (fashion_mnist's clothes, mnist's
digits, synthetic's shapes), matched loosely; a class the data does not have is an error naming the
classes there are, in `dataset.exclude_classes` and in `vae score anomaly_class=/normal_class=`; and
what score writes is strict JSON (null, never NaN)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY_SYNTHETIC, make_idx_dataset, run_vae
from vae_cli.cli import compose_config
from vae_cli.config import DatasetConfig
from vae_cli.data import ImageSplit, create_dataset
from vae_cli.data.base import class_indices
from vae_cli.data.mnist import FASHION_MNIST_CLASSES
from vae_cli.data.synthetic import SHAPES
from vae_cli.errors import ConfigError


def strict_json(path: Path) -> dict:
    """The file parsed as JSON proper: NaN and Infinity (which Python's json writes by default) refused."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# --- names of the built-in datasets' classes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    make_idx_dataset(root, folder="MNIST")
    make_idx_dataset(root, folder="FashionMNIST", seed=1)
    return root


def test_fashion_mnist_has_its_ten_class_names_typed_as_on_a_command_line(idx_root: Path) -> None:
    data = create_dataset(DatasetConfig(name="fashion_mnist", val_size=20, download=False), idx_root)
    assert data.label_names == FASHION_MNIST_CLASSES
    assert FASHION_MNIST_CLASSES[0] == "t-shirt" and FASHION_MNIST_CLASSES[9] == "ankle-boot"
    assert all(name == name.lower() and " " not in name and "/" not in name for name in FASHION_MNIST_CLASSES)


def test_fashion_mnist_classes_are_excluded_by_name_ignoring_case(idx_root: Path) -> None:
    cfg = DatasetConfig(name="fashion_mnist", val_size=20, download=False, exclude_classes=["Sneaker", "bag"])
    data = create_dataset(cfg, idx_root)
    for split in (data.train, data.val):
        assert not torch.isin(split.labels, torch.tensor([7, 8])).any()
    assert torch.isin(data.test.labels, torch.tensor([7, 8])).any()  # test keeps them


def test_mnist_classes_are_its_digits(idx_root: Path) -> None:
    data = create_dataset(DatasetConfig(name="mnist", val_size=20, download=False), idx_root)
    assert data.label_names == [str(d) for d in range(10)]
    with pytest.raises(ConfigError, match=r"unknown label 'bag': the labels are 0 to 9$"):
        create_dataset(DatasetConfig(name="mnist", download=False, exclude_classes=["bag"]), idx_root)


def test_synthetic_labels_are_its_shapes() -> None:
    settings = {"name": "synthetic", "size": 200, "val_size": 20, "test_size": 40, "image_size": 16}
    data = create_dataset(DatasetConfig(**settings), "data")
    assert data.label_names == list(SHAPES) == ["square", "ellipse", "heart", "triangle"]
    no_hearts = create_dataset(DatasetConfig(**settings, exclude_classes=["heart"]), "data")
    assert not (no_hearts.train.labels == 2).any() and (no_hearts.test.labels == 2).any()


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("t-shirt", 0),
        ("T-Shirt", 0),
        ("tshirt", 0),
        ("TSHIRT", 0),
        ("ankle-boot", 9),
        ("Ankle_Boot", 9),
        ("ankle boot", 9),
        ("0", 0),
        ("9", 9),
        (8, 8),
    ],
)
def test_names_match_ignoring_case_and_punctuation(text, index: int) -> None:
    assert class_indices([text], FASHION_MNIST_CLASSES, "anomaly_class") == [index]


def test_a_loose_match_must_be_unique_and_an_exact_name_wins() -> None:
    names = ["a-b", "ab", "Cat"]
    assert class_indices(["ab"], names, "k") == [1] and class_indices(["a-b"], names, "k") == [0]
    assert class_indices(["cat"], names, "k") == [2]
    with pytest.raises(ConfigError, match="unknown label 'A_B'"):
        class_indices(["A_B"], names, "k")  # a-b or ab: ambiguous


# --- unknown classes are errors, naming the classes there are ------------------------------------------


def test_exclude_classes_99_is_an_error_naming_the_digits(idx_root: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"dataset.exclude_classes: unknown label '99': the labels are 0 to 9"
    ):
        create_dataset(DatasetConfig(name="mnist", download=False, exclude_classes=[99]), idx_root)


def test_exclude_classes_unknown_name_lists_the_names(idx_root: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown label 'boot': the labels are t-shirt, trouser, .*, ankle-boot \(or their numbers, 0 to 9\)",
    ):
        create_dataset(
            DatasetConfig(name="fashion_mnist", download=False, exclude_classes=["boot"]), idx_root
        )
    with pytest.raises(ConfigError, match="unknown label '10'"):
        create_dataset(DatasetConfig(name="fashion_mnist", download=False, exclude_classes=[10]), idx_root)


def test_exclude_classes_of_numbered_labels_must_be_a_label_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((30, 4)).astype(np.float32), y=np.arange(30) % 3)
    cfg = DatasetConfig(name="tensor", path=str(path), exclude_classes=[5])
    with pytest.raises(ConfigError, match=r"unknown label '5': the labels are 0, 1, 2$"):
        create_dataset(cfg, tmp_path)
    ok = create_dataset(DatasetConfig(name="tensor", path=str(path), exclude_classes=[2]), tmp_path)
    assert not (ok.train.labels == 2).any()


# --- vae score ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_hearts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv VAE trained one epoch on synthetic shapes without hearts (in this process)."""
    from vae_cli.training.loop import train

    run_dir = tmp_path_factory.mktemp("no_hearts")
    cfg = compose_config(
        [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0", "dataset.exclude_classes=[heart]"]
    )
    metrics = train(cfg, run_dir)
    assert metrics
    return run_dir


def score_in_process(run: Path, out: Path, *overrides: str) -> dict:
    from vae_cli.commands.score import score

    cfg = compose_config([f"ckpt={run}", f"out={out}", "elbo_samples=2", *overrides], "score")
    return score(cfg, out)


def test_training_metrics_are_strict_json(no_hearts: Path) -> None:
    assert strict_json(no_hearts / "metrics.json")


def test_score_by_the_left_out_shape_names_it_and_writes_strict_json(no_hearts: Path, tmp_path: Path) -> None:
    result = score_in_process(no_hearts, tmp_path)
    assert result["ground_truth"] == "anomalies: the classes left out of training (heart)"
    metrics = strict_json(tmp_path / "score_metrics.json")
    assert 0 <= metrics["roc_auc"] <= 1
    with open(tmp_path / "scores.csv", newline="") as f:
        labels = {row["label"] for row in csv.DictReader(f)}
    assert labels <= set(SHAPES) and "heart" in labels


def test_anomaly_class_by_name(no_hearts: Path, tmp_path: Path) -> None:
    result = score_in_process(no_hearts, tmp_path, "anomaly_class=[Heart,triangle]")
    assert result["ground_truth"] == "anomalies: heart, triangle"
    assert result["num_anomalous"] > 0 and result["num_normal"] > 0


def test_no_ground_truth_in_a_split_is_null_not_nan(no_hearts: Path, tmp_path: Path) -> None:
    # val holds no hearts, the class left out: no anomalies, so no ROC AUC: null in the file
    result = score_in_process(no_hearts, tmp_path, "input=val")
    assert result["num_anomalous"] == 0
    metrics = strict_json(tmp_path / "score_metrics.json")
    assert metrics["roc_auc"] is None and metrics["average_precision"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "anomaly_class=42",
            "anomaly_class: unknown label '42': the labels are square, ellipse, heart, triangle",
        ),
        ("normal_class=[square,circle]", "normal_class: unknown label 'circle'"),
        ("anomaly_class=-1", "unknown label '-1'"),
        # known, but not in val (left out of training): every input would be normal
        ("input=val anomaly_class=heart", "no example of synthetic val has that label"),
        ("normal_class=[0,1,2,3]", "every example of synthetic test has one of those labels"),
    ],
)
def test_score_refuses_classes_that_rank_nothing(no_hearts: Path, tmp_path: Path, override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        score_in_process(no_hearts, tmp_path / "out", *override.split())
    assert not (tmp_path / "out" / "scores.csv").exists()  # refused before scoring


def test_score_anomaly_class_42_is_one_line_and_exit_code_2(no_hearts: Path, tmp_path: Path) -> None:
    result = run_vae(["score", f"ckpt={no_hearts}", f"out={tmp_path / 'out'}", "anomaly_class=42"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: anomaly_class: unknown label '42': the labels are square, ellipse, heart, triangle "
        "(or their numbers, 0 to 3)"
    ]


def test_ground_truth_of_an_image_folder_knows_only_its_labels() -> None:
    from vae_cli.commands.score import Inputs, ground_truth

    split = ImageSplit(
        torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), None, list("abcd")
    )
    inputs = Inputs(split, "input=folder", "none", ["normal", "defect"])
    cfg = OmegaConf.create({"anomaly_class": "Defect", "normal_class": None})
    anomalous, truth = ground_truth(cfg, inputs)
    assert anomalous.tolist() == [False, False, True, True] and truth == "anomalies: defect"
    cfg = OmegaConf.create({"anomaly_class": 2, "normal_class": None})
    with pytest.raises(
        ConfigError, match=r"unknown label '2': the labels are normal, defect \(or their numbers, 0 to 1\)"
    ):
        ground_truth(cfg, inputs)


def test_evaluate_metrics_are_strict_json(no_hearts: Path, tmp_path: Path) -> None:
    from vae_cli.commands.evaluate import evaluate

    cfg = compose_config([f"ckpt={no_hearts}", f"out={tmp_path}", "iwae_k=2", "probe=false"], "evaluate")
    evaluate(cfg, tmp_path)
    (written,) = [p for p in tmp_path.rglob("*.json") if not p.name.startswith(".")]
    assert strict_json(written)
