"""DCI (vae_cli/metrics.py's `dci`) where the MIG is reported: training's metrics.json on data with
ground-truth factors, and `vae evaluate`'s metrics and table on the session's tiny checkpoint (its test
split is below DCI_MIN_EXAMPLES, its train split above)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import ok, only_run_dir, vae
from tests.helpers.data import TINY_TRAIN
from vae_cli.cli import compose_config
from vae_cli.commands.evaluate import DCI_KEYS
from vae_cli.training.loop import train


def test_training_reports_dci_beside_the_mig(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_TRAIN, "dataset.size=400", "dataset.test_size=150"])
    metrics = train(cfg, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())["test"]
    for key in ("mig", *DCI_KEYS):
        assert 0 <= metrics["test"][key] <= 1 and written[key] == metrics["test"][key], key


@pytest.fixture(scope="module")
def evaluated(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate_dci")
    base = ["evaluate", f"ckpt={trained_run}", "iwae_k=2", "probe=false", "pca=false"]
    runs = {}
    for split in ("train", "test"):  # 200 and 50 examples
        (root / split).mkdir()
        runs[split] = vae([*base, f"split={split}"], root / split)
        ok(runs, split)
        folder = only_run_dir(root / split, "evaluate")
        runs[f"{split}_metrics"] = json.loads((folder / f"metrics_{split}.json").read_text())
    return runs


def test_evaluate_reports_dci_on_a_split_with_enough_codes(evaluated) -> None:
    m = evaluated["train_metrics"]
    assert m["num_examples"] == 200 and all(0 <= m[key] <= 1 for key in DCI_KEYS)
    assert "DCI disentanglement, completeness, informativeness" in rendered_table(m)
    few = evaluated["test_metrics"]
    assert few["mig"] is not None and all(few[key] is None for key in DCI_KEYS)
    assert "DCI" not in evaluated["test"].stderr and "DCI" not in rendered_table(few)


def rendered_table(metrics: dict) -> str:
    """evaluate's results table for these metrics, drawn wide enough that no cell wraps, as one line."""
    import io

    from rich.console import Console

    from vae_cli.commands.evaluate import results_table

    console = Console(width=240, file=io.StringIO())
    console.print(results_table(metrics, "synthetic"))
    return " ".join(console.file.getvalue().split())
