"""The PCA baseline of `vae evaluate` (vae_cli/baselines.py): its error against a numpy SVD on a tiny set,
on a split's batches, when it cannot be fitted, and in evaluate's metrics and table on the session's tiny
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.cli import ok, only_run_dir, vae
from vae_cli.baselines import fit_pca, pca_recon_errors, pca_skip_reason, training_inputs
from vae_cli.data.base import ImageSplit


def svd_pca_errors(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """sum_d (x - x_hat)^2 per test row, x_hat the projection onto the top k right singular vectors of
    the centred training matrix (Eckart-Young: the best rank-k linear reconstruction)."""
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    w = vt[:k]
    centred = test - mean
    return ((centred - centred @ w.T @ w) ** 2).sum(1)


def test_pca_error_is_the_svd_projection_error() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))  # correlated features
    test = rng.normal(size=(10, 12)) @ rng.normal(size=(12, 12))
    baseline = fit_pca(train, 3)
    got = baseline.recon_error(torch.from_numpy(test))
    np.testing.assert_allclose(got.numpy(), svd_pca_errors(train, test, 3), rtol=1e-8)
    # on the training set, the error is the variance left in the discarded directions
    s = np.linalg.svd(train - train.mean(0), compute_uv=False)
    assert baseline.recon_error(torch.from_numpy(train)).sum().item() == pytest.approx((s[3:] ** 2).sum())
    assert baseline.explained_variance == pytest.approx((s[:3] ** 2).sum() / (s**2).sum())
    assert baseline.k == 3 and baseline.train_examples == 40


def test_pca_errors_on_a_split_are_per_example_over_its_batches() -> None:
    g = torch.Generator().manual_seed(0)
    train = ImageSplit((torch.rand(30, 1, 4, 4, generator=g) * 255).to(torch.uint8))
    test = ImageSplit((torch.rand(7, 1, 4, 4, generator=g) * 255).to(torch.uint8))
    x_train = training_inputs(train, "none", 1000, seed=0)
    torch.testing.assert_close(x_train, train.images.flatten(1).float() / 255)
    baseline = fit_pca(x_train, 2)
    errors = pca_recon_errors(
        baseline, test, binarize="none", seed=0, batch_size=3, device=torch.device("cpu")
    )
    expected = svd_pca_errors(x_train.double().numpy(), test.images.flatten(1).double().numpy() / 255, 2)
    np.testing.assert_allclose(errors.numpy(), expected, rtol=1e-6)
    assert len(training_inputs(train, "none", 10, seed=0)) == 10  # a subsample of a large split


def test_pca_is_skipped_where_it_has_fewer_directions_than_latent_dim() -> None:
    assert pca_skip_reason(4, 200, 256) is None
    assert "exceeds the data's 3 dimensions" in pca_skip_reason(4, 200, 3)
    assert "exceeds the 2 training examples" in pca_skip_reason(4, 2, 256)


@pytest.fixture(scope="module")
def evaluated(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate_pca")
    base = ["evaluate", f"ckpt={trained_run}", "iwae_k=2", "max_examples=20", "probe=false"]
    runs = {}
    for name, extra in {"pca": [], "small": ["pca_train_size=50"], "off": ["pca=false"]}.items():
        (root / name).mkdir()
        runs[name] = vae([*base, *extra], root / name)
        ok(runs, name)
        folder = only_run_dir(root / name, "evaluate")
        runs[f"{name}_metrics"] = json.loads((folder / "metrics_test.json").read_text())
    return runs


def test_evaluate_reports_pca_beside_the_model(evaluated, trained_run: Path) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data

    m = evaluated["pca_metrics"]
    assert m["pca_components"] == 4 and m["pca_train_examples"] == 200 and 0 < m["pca_explained_variance"] < 1
    assert m["recon_error"] > 0 and m["pca_recon_error"] > 0
    data = load_data(read_checkpoint(trained_run, "cpu"), None)
    train = data.train.images.flatten(1).double().numpy() / 255
    test = data.test.images[:20].flatten(1).double().numpy() / 255
    assert m["pca_recon_error"] == pytest.approx(svd_pca_errors(train, test, 4).mean(), rel=1e-6)
    table = rendered_table(m)
    assert "squared error: model vs PCA" in table and "4 components, fit on 200 train" in table


def test_pca_train_size_and_pca_false(evaluated) -> None:
    assert evaluated["small_metrics"]["pca_train_examples"] == 50
    off = evaluated["off_metrics"]
    assert off["pca_recon_error"] is None and "pca_components" not in off
    assert off["recon_error"] == pytest.approx(evaluated["pca_metrics"]["recon_error"])
    assert "model vs PCA" not in evaluated["off"].stderr


def rendered_table(metrics: dict) -> str:
    """evaluate's results table for these metrics, drawn wide enough that no cell wraps, as one line."""
    import io

    from rich.console import Console

    from vae_cli.commands.evaluate import results_table

    console = Console(width=240, file=io.StringIO())
    console.print(results_table(metrics, "synthetic"))
    return " ".join(console.file.getvalue().split())
