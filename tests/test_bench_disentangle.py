"""benchmarks/disentangle.py (`make bench-disentangle`): its objectives' overrides compose into valid
`vae train` configs, the shared budget, a smoke run of one objective on tiny data (its runs are in this
process, so the smoke is as fast as the run), read back with --reuse; the report's cells."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from tests.helpers.cli import REPO
from tests.helpers.data import TINY_TRAIN
from vae_cli.cli import compose_config
from vae_cli.config import validate_train_config
from vae_cli.sweep.summary import collect

#: tiny synthetic data (test split above DCI's minimum) and a tiny MLP, in place of the benchmark's budget
TINY_BUDGET = [
    *(o for o in TINY_TRAIN if not o.startswith(("dataset.val_size=", "dataset.test_size="))),
    "dataset.val_size=40",
    "dataset.test_size=120",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "vae_bench_disentangle", REPO / "benchmarks" / "disentangle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_objective_is_registered_and_its_own_keys_compose(bench) -> None:
    from vae_cli.config.objectives import NAMES

    names = ["elbo", "elbo", "btcvae", "factor", "dip", "capacity", "mmd"]
    assert [overrides[0] for overrides in bench.OBJECTIVES.values()] == [f"objective={n}" for n in names]
    assert set(names) <= set(NAMES)
    for objective, overrides in bench.OBJECTIVES.items():
        if any(o.startswith("objective.") for o in overrides):  # keys of the objective's schema
            cfg = compose_config(bench.run_overrides(objective, 1, quick=False))
            validate_train_config(cfg)
            assert (cfg.dataset.name, cfg.latent_dim, cfg.seed, cfg.train.epochs) == ("synthetic", 10, 1, 8)
    assert bench.OBJECTIVES["β-VAE β=4"] == ["objective=elbo", "beta=4"]


def test_the_budget_is_shared_and_quick_and_epochs_replace_its_keys(bench) -> None:
    assert bench.run_overrides("FactorVAE", 1, quick=False)[-4:] == [
        "objective=factor",
        "objective.hidden=256",  # a smaller discriminator than the paper's 6 x 1000
        "objective.layers=3",
        "seed=1",
    ]
    quick = bench.budget_overrides(quick=True)
    assert "train.epochs=1" in quick and "train.epochs=8" not in quick and "dataset.size=1200" in quick
    longer = bench.budget_overrides(quick=False, epochs=20)
    assert [o for o in longer if o.startswith("train.epochs")] == ["train.epochs=20"]


def test_a_smoke_run_prints_the_table_and_reuse_reads_the_runs_back(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(bench, "BUDGET", TINY_BUDGET)
    monkeypatch.setattr(bench, "QUICK", [])
    args = ["--quick", "--objectives", "FactorVAE", "--work", str(tmp_path)]
    bench.main(args)
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| FactorVAE | `objective=factor")]
    assert "n/a" not in row  # recon, KL, MIG, the three DCI numbers and the wall time
    assert (tmp_path / "300_FactorVAE_s0" / "metrics.json").is_file()
    (row,) = collect(tmp_path)  # the work folder reads as a sweep: `vae report <work>`
    assert (row["job"], row["status"]) == (300, "done") and isinstance(row["dci"], float)

    def no_training(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("--reuse trained again")

    monkeypatch.setattr("vae_cli.training.loop.train", no_training)
    bench.main([*args, "--reuse"])
    again = capsys.readouterr().out
    assert again.split("| objective |")[1].split("\n\n")[0] == out.split("| objective |")[1].split("\n\n")[0]


def test_cells_are_mean_and_sd_over_the_seeds(bench) -> None:
    assert bench.mean_sd([0.25, 0.75], 3) == "0.500 ± 0.250"  # ddof=0
    assert bench.mean_sd([12.0], 1) == "12.0"
    assert bench.mean_sd([math.nan, math.nan], 3) == "n/a"  # no factors: no MIG
    assert bench.run_folder("β-VAE β=4", 1) == "101_beta-VAE_beta4_s1"
    assert bench.numbers({"test": {"recon": 1, "mig": None}, "wall_time_s": 3.0})["wall_time_s"] == 3.0
