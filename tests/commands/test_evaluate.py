"""`vae evaluate` (vae_cli/commands/evaluate.py) end to end on the session's tiny checkpoint
(`trained_run`), each run in this process: finite, ordered, reproducible metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import ok, only_run_dir, run_folder, vae_all
from tests.helpers.data import LATENT, SIZE


@pytest.fixture(scope="module")
def runs(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    ckpt, out = trained_run / "checkpoints" / "best.ckpt", root / "out"
    commands = {
        "evaluate": ["evaluate", f"ckpt={trained_run}", "iwae_k=64", "seed=1", "log_to_run=true"],
        "evaluate_val_a": ["evaluate", f"ckpt={ckpt}", "iwae_k=64", "seed=1", "split=val", f"out={out}/ea"],
        "evaluate_val_b": ["evaluate", f"ckpt={ckpt}", "iwae_k=64", "seed=1", "split=val", f"out={out}/eb"],
    }
    return {"root": root / "runs", "run_dir": trained_run, "out": out, **vae_all(commands, root / "runs")}


def test_evaluate_writes_finite_ordered_metrics(runs) -> None:
    result = ok(runs, "evaluate")
    m = json.loads((run_folder(runs, "evaluate", "evaluate") / "metrics_test.json").read_text())
    assert m["split"] == "test" and m["num_examples"] == 50 and m["iwae_k"] == 64
    for key in (
        "neg_elbo",
        "recon",
        "kl",
        "iwae_nll",
        "elbo_bits_per_dim",
        "iwae_bits_per_dim",
        "probe_accuracy",
    ):
        assert math.isfinite(m[key]), key
    assert m["iwae_nll"] <= m["neg_elbo"]  # the importance-weighted bound is the tighter one
    assert m["neg_elbo"] == pytest.approx(m["recon"] + m["kl"])
    assert m["iwae_bits_per_dim"] == pytest.approx(m["iwae_nll"] / (SIZE * SIZE * math.log(2)))
    assert len(m["kl_per_dim"]) == LATENT and len(m["mu_variance_per_dim"]) == LATENT
    assert m["active_units"] == sum(v > 0.01 for v in m["mu_variance_per_dim"])
    assert 0 <= m["probe_accuracy"] <= 1 and m["probe_train_examples"] == 200
    assert "IWAE" in result.stderr  # the rich table


def test_evaluate_is_reproducible_given_the_seed(runs) -> None:
    ok(runs, "evaluate_val_a")
    ok(runs, "evaluate_val_b")
    first = json.loads((runs["out"] / "ea" / "metrics_val.json").read_text())
    second = json.loads((runs["out"] / "eb" / "metrics_val.json").read_text())
    for m in (first, second):
        m.pop("wall_time_s")
    assert first == second


def test_evaluate_says_what_its_numbers_bound(runs) -> None:
    """The session's model is a Bernoulli on binary 8-bit images (every pixel 0 or 255): a discrete
    likelihood of them, so its bounds compare with papers' nats on the same data."""
    m = json.loads((run_folder(runs, "evaluate", "evaluate") / "metrics_test.json").read_text())
    assert m["data"] == "binary" and "upper bounds on -log p(x) of the binary data" in m["bound"]
    assert m["comparable"] == ["neg_elbo", "iwae_nll", "elbo_bits_per_dim", "iwae_bits_per_dim"]
    assert m["elbo_bits_per_dim"] == pytest.approx(m["neg_elbo"] / (SIZE * SIZE * math.log(2)))


#: a tiny MLP on grey 8-bit images (uint8 in a tensor file, not binarised), one per likelihood of 8-bit data
PIXEL_TRAIN = [
    "train",
    "dataset=tensor",
    "dataset.standardize=false",
    "model=mlp",
    "model.hidden_dims=[32]",
    f"latent_dim={LATENT}",
    "train.epochs=1",
    "train.batch_size=50",
    "train.image_every=0",
]


@pytest.fixture(scope="module")
def pixel_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pixels")
    images = np.random.default_rng(0).integers(0, 256, (200, SIZE, SIZE), dtype=np.uint8)
    np.save(root / "grey.npy", images)
    losses = {"logistic": ["loss=logistic", "loss.components=2"], "gaussian": ["loss=gaussian"]}
    train = [*PIXEL_TRAIN, f"dataset.path={root / 'grey.npy'}"]
    trained = vae_all({name: [*train, *keys] for name, keys in losses.items()}, root / "train")
    for name in losses:
        ok(trained, name)
    evaluate = {
        name: ["evaluate", f"ckpt={only_run_dir(root / 'train' / name)}", "iwae_k=8", f"out={root / name}"]
        for name in losses
    }
    results = vae_all(evaluate, root / "evaluate")
    for name in losses:
        ok(results, name)
    return {name: json.loads((root / name / "metrics_test.json").read_text()) for name in losses}


def test_evaluate_reports_bits_per_dim_of_the_8bit_data_for_the_logistic_mixture(pixel_runs) -> None:
    m = pixel_runs["logistic"]
    assert m["data"] == "8-bit" and m["bound"].startswith("upper bounds on -log p(x) of the 8-bit data")
    assert m["comparable"] == ["neg_elbo", "iwae_nll", "elbo_bits_per_dim", "iwae_bits_per_dim"]
    dims = SIZE * SIZE  # C * H * W, one channel
    assert m["num_dims"] == dims
    assert m["elbo_bits_per_dim"] == pytest.approx(m["neg_elbo"] / (dims * math.log(2)))
    assert m["iwae_bits_per_dim"] == pytest.approx(m["iwae_nll"] / (dims * math.log(2)))
    assert 0 <= m["iwae_nll"] <= m["neg_elbo"]  # a code length of a discrete image is never negative
    assert not any(key.startswith("discrete_") for key in m)


def test_evaluate_gives_the_gaussian_a_discretised_number_on_8bit_data(pixel_runs) -> None:
    """The Gaussian's own numbers are of a density (labelled not comparable); the discretised Gaussian's,
    from the same draws, bound -log p(x) of the 8-bit data and are the ones to compare."""
    m = pixel_runs["gaussian"]
    assert m["data"] == "8-bit" and "not a bound on -log p(x) of the 8-bit data" in m["bound"]
    own = ["neg_elbo", "iwae_nll", "elbo_bits_per_dim", "iwae_bits_per_dim"]
    assert m["comparable"] == [f"discrete_{key}" for key in own]
    dims = SIZE * SIZE
    assert m["discrete_elbo_bits_per_dim"] == pytest.approx(m["discrete_neg_elbo"] / (dims * math.log(2)))
    assert m["discrete_iwae_bits_per_dim"] == pytest.approx(m["discrete_iwae_nll"] / (dims * math.log(2)))
    assert m["discrete_neg_elbo"] == pytest.approx(m["discrete_recon"] + m["kl"])
    assert 0 <= m["discrete_iwae_nll"] <= m["discrete_neg_elbo"]
