"""The anomaly scores of `vae score score=<name>` (vae_cli/scores.py) and the background model that
`vae train train.background=true` trains for the likelihood ratio.

One tiny MLP is trained once for the module, in this process, on synthetic shapes without hearts, with
its background model; every registered score then ranks the test split, where hearts are the anomalies.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.cli import one_error, vae, vae_all
from vae_cli.config.commands import SCORE_NAMES
from vae_cli.scores import SCORES, fit_code_mixture, png_bits

TRAIN = [
    "train",
    "dataset=synthetic",
    "dataset.size=300",
    "dataset.val_size=50",
    "dataset.test_size=60",
    "dataset.image_size=16",
    "dataset.exclude_classes=[heart]",
    "model=mlp",
    "model.hidden_dims=[32]",
    "latent_dim=2",
    "train.epochs=2",
    "train.batch_size=32",
    "train.image_every=0",
    "train.background=true",
    "train.background_noise=0.2",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("scores")
    trained = vae([*TRAIN, "hydra.run.dir=run"], root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = root / "run"
    commands = {name: ["score", f"ckpt={run}", f"score={name}"] for name in SCORES.names()}
    commands["iwae"] += ["iwae_k=8"]
    commands["complexity_iwae"] = ["score", f"ckpt={run}", "score=complexity", "iwae_k=8"]
    return {"root": root, "run": run, "train": trained, **vae_all(commands, root / "scores")}


def output(runs: dict, name: str) -> tuple[list[dict[str, str]], dict]:
    result = runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (runs["root"] / "scores" / name / "outputs").glob("*/*/*")
    with open(folder / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((folder / "score_metrics.json").read_text())


def test_the_registry_and_the_schema_name_the_same_scores() -> None:
    assert sorted(SCORE_NAMES) == SCORES.names()
    for name in SCORES.names():
        score = SCORES.get(name)
        assert score.name == name and score.units and len(score.doc) > 80  # each says what it computes


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_every_registered_score_ranks_the_test_split(runs, name: str) -> None:
    rows, metrics = output(runs, name)
    assert len(rows) == 60 and metrics["score"] == name and metrics["units"].endswith("per example")
    scores = [float(r["score"]) for r in rows]
    assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)
    assert {"rank", "index", "name", "neg_elbo", "recon", "kl", "recon_error", "label", "anomalous"} <= set(
        rows[0]
    )  # every column of before stays
    assert 0.0 <= metrics["roc_auc"] <= 1.0 and metrics["ground_truth"].startswith(
        "anomalies: the classes left"
    )
    column = {"iwae": "iwae_nll", "likelihood_ratio": None}.get(name, name)
    if column is not None:  # the chosen score is a column of its own, equal to `score`
        assert all(r["score"] == r[column] for r in rows)


def test_the_default_score_is_neg_elbo_and_iwae_k_alone_still_means_iwae(runs) -> None:
    from omegaconf import OmegaConf

    from vae_cli.commands.score import chosen_score

    assert chosen_score(OmegaConf.create({"score": None, "iwae_k": 0})).name == "neg_elbo"
    assert chosen_score(OmegaConf.create({"score": None, "iwae_k": 16})).name == "iwae"
    assert chosen_score(OmegaConf.create({"score": "complexity", "iwae_k": 16})).name == "complexity"


def test_png_bits_is_the_size_of_the_png_file_pil_writes() -> None:
    rng = np.random.default_rng(0)
    grey = np.zeros((16, 16), np.uint8)
    grey[4:12, 4:12] = 255
    colour = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    for image in (grey, colour):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", optimize=True, compress_level=9)
        chw = torch.from_numpy(image[None] if image.ndim == 2 else image.transpose(2, 0, 1).copy())
        assert png_bits(chw[None]).tolist() == [8 * len(buffer.getvalue())]
    # a flat image compresses better than noise of the same size
    noise = torch.from_numpy(rng.integers(0, 256, size=(1, 1, 16, 16), dtype=np.uint8))
    assert png_bits(torch.zeros(1, 1, 16, 16, dtype=torch.uint8)) < png_bits(noise)


def test_complexity_is_the_likelihood_in_bits_minus_the_png_bits_of_each_input(runs) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data

    test = load_data(read_checkpoint(runs["run"], "cpu"), None).test
    for name, estimate in (("complexity", "neg_elbo"), ("complexity_iwae", "iwae_nll")):
        rows, metrics = output(runs, name)
        assert metrics["units"] == "bits per example"
        for r in rows:
            image = test.images[int(r["index"])][0].numpy()
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", optimize=True, compress_level=9)
            assert float(r["png_bits"]) == 8 * len(buffer.getvalue())
            expected = float(r[estimate]) / math.log(2) - float(r["png_bits"])
            assert float(r["complexity"]) == pytest.approx(expected, abs=1e-2)


def test_likelihood_ratio_is_the_model_minus_the_background_log_likelihood(runs) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data
    from vae_cli.estimators import estimate_split

    rows, metrics = output(runs, "likelihood_ratio")
    assert metrics["units"] == "nats per example" and metrics["score_label"] == "-LLR"
    for r in rows:  # LLR = log p(x) - log p_background(x); the score is minus it
        assert float(r["likelihood_ratio"]) == pytest.approx(
            float(r["background_nll"]) - float(r["neg_elbo"]), abs=1e-3
        )
        assert float(r["score"]) == pytest.approx(-float(r["likelihood_ratio"]), abs=1e-6)
    background = read_checkpoint(runs["run"] / "background", "cpu")
    test = load_data(background, None).test
    direct = estimate_split(background.model, test, binarize="dynamic", k=16, seed=0)["neg_elbo"]
    for r in rows:  # the background's -ELBO on the same binarisation draw as the model's
        assert float(r["background_nll"]) == pytest.approx(float(direct[int(r["index"])]), rel=1e-5)


def test_a_one_component_code_mixture_is_the_gaussian_of_the_codes() -> None:
    codes = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 2.0, 0.3], [0.0, 0.0, 0.2]]
    )
    mean = codes.double().mean(0)
    covariance = torch.cov(codes.double().T, correction=0) + 1e-5 * torch.eye(3, dtype=torch.float64)
    gaussian = torch.distributions.MultivariateNormal(mean, covariance)  # the maximum-likelihood fit
    points = torch.randn(20, 3, generator=torch.Generator().manual_seed(1)).double()
    density = fit_code_mixture(codes, 1, seed=0).score_samples(points.numpy())
    assert np.allclose(density, gaussian.log_prob(points).numpy(), atol=1e-6)


def test_latent_is_minus_the_density_of_each_code_under_the_training_codes_mixture(runs) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data
    from vae_cli.estimators import encode_split

    rows, metrics = output(runs, "latent")
    assert metrics["units"] == "nats of the code per example"
    trained = read_checkpoint(runs["run"], "cpu")
    data = load_data(trained, None)
    mixture = fit_code_mixture(encode_split(trained.model, data.train, "dynamic", 0), 10, seed=0)
    codes = encode_split(trained.model, data.test, "dynamic", 0).double().numpy()
    expected = -mixture.score_samples(codes)
    for r in rows:
        assert float(r["latent"]) == pytest.approx(expected[int(r["index"])], rel=1e-4, abs=1e-3)


def test_the_background_model_is_trained_saved_and_reloaded_beside_the_run(runs) -> None:
    from vae_cli import load_model

    run = runs["run"]
    for folder in (run, run / "background"):
        assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
        assert json.loads((folder / "metrics.json").read_text())["epochs"] == 2
    assert "training the background model" in runs["train"].stderr
    model, background = load_model(run, "cpu"), load_model(run / "background", "cpu")
    assert background.config.train.background is False and background.config.train.background_noise == 0.2
    different = [
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), background.state_dict().values(), strict=True)
    ]
    assert any(different)  # two models, neither written over the other


def test_a_resumed_run_resumes_its_background_model_and_leaves_the_old_files(runs, tmp_path: Path) -> None:
    run = runs["run"]
    before = {p: p.read_bytes() for p in run.rglob("*.ckpt")}
    resumed = vae(
        [*TRAIN, "train.epochs=3", f"train.resume={run / 'checkpoints' / 'last.ckpt'}", "hydra.run.dir=more"],
        tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for folder in (tmp_path / "more", tmp_path / "more" / "background"):  # each ran its third epoch only
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epochs"] == 3 and len(metrics["epoch_train_seconds"]) == 1
    assert {p: p.read_bytes() for p in run.rglob("*.ckpt")} == before


def test_likelihood_ratio_without_a_background_model_is_one_line(runs, tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    shutil.copytree(runs["run"], lone, ignore=shutil.ignore_patterns("background"))
    result = vae(["score", f"ckpt={lone}", "score=likelihood_ratio"], tmp_path)
    line = one_error(result.returncode, result.stderr)
    assert "score=likelihood_ratio needs a background model" in line and "train.background=true" in line
    shutil.copy(runs["run"] / "checkpoints" / "best.ckpt", tmp_path / "model.ckpt")
    result = vae(["score", f"ckpt={tmp_path / 'model.ckpt'}", "score=likelihood_ratio"], tmp_path)
    assert "needs a background model" in one_error(result.returncode, result.stderr)


def test_scores_that_cannot_apply_are_one_line(runs, tmp_path: Path) -> None:
    result = vae(["score", f"ckpt={runs['run']}", "score=iwae"], tmp_path)
    assert "score=iwae needs importance samples: set iwae_k" in one_error(result.returncode, result.stderr)
    table = tmp_path / "table.csv"
    rng = np.random.default_rng(0)
    table.write_text("a,b\n" + "\n".join(f"{x:.4f},{y:.4f}" for x, y in rng.normal(size=(40, 2))) + "\n")
    args = [f"dataset.path={table}", "model=mlp", "model.hidden_dims=[8]", "loss=gaussian", "train.epochs=1"]
    result = vae(["train", "dataset=tensor", *args, "train.background=true"], tmp_path)
    assert "train.background=true replaces pixels" in one_error(result.returncode, result.stderr)
    trained = vae(["train", "dataset=tensor", *args, "hydra.run.dir=table"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = vae(["score", f"ckpt={tmp_path / 'table'}", "score=complexity"], tmp_path)
    assert "score=complexity compresses images" in one_error(result.returncode, result.stderr)
    result = vae(["score", f"ckpt={tmp_path / 'table'}", "score=latent", "components=100"], tmp_path)
    line = one_error(result.returncode, result.stderr)
    assert "score=latent fits 100 Gaussians to the training codes" in line and "set components=" in line


def test_perturbed_pixels_are_random_values_at_the_given_rate() -> None:
    from vae_cli.data.loaders import perturb_pixels

    images = torch.full((200, 3, 8, 8), 7, dtype=torch.uint8)
    same = perturb_pixels(images, 1e-9, torch.Generator().manual_seed(0))
    assert torch.equal(same, images)
    noisy = perturb_pixels(images, 0.25, torch.Generator().manual_seed(0))
    changed = (noisy != images).any(1).float().mean()  # whole pixels: all channels at once
    assert 0.22 < float(changed) < 0.26 and noisy.dtype == torch.uint8
    binary = perturb_pixels(
        torch.zeros(50, 1, 8, 8, dtype=torch.uint8), 0.5, torch.Generator().manual_seed(1), True
    )
    assert set(binary.unique().tolist()) == {0, 255}
