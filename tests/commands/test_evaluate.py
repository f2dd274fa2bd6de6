"""`vae evaluate` (vae_cli/commands/evaluate.py) end to end on the session's tiny checkpoint
(`trained_run`), each run in this process: finite, ordered, reproducible metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.cli import ok, run_folder, vae_all
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
