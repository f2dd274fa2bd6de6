"""`vae embed` (vae_cli/commands/embed.py) on the session's tiny checkpoint (synthetic data: labels and
factors, latent_dim 4): its files and their columns, the codes against encode_split, the projection, the
scatter, its config and --help; the one-line errors in real processes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.cli import fork_all, ok, one_error, only_run_dir, vae
from tests.helpers.data import LATENT
from vae_cli.commands.embed import draw_scatter, pick_examples, project
from vae_cli.errors import DataError

N = 30


@pytest.fixture(scope="module")
def embedded(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("embed")
    result = vae(["embed", f"ckpt={trained_run}", f"n={N}", "seed=1", "log_to_run=true"], root)
    ok({"r": result}, "r")
    folder = only_run_dir(root, "embed")
    return {"result": result, "folder": folder, "npz": dict(np.load(folder / "latents.npz"))}


def test_embed_writes_the_codes_labels_and_factors(embedded, trained_run: Path) -> None:
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data
    from vae_cli.estimators import encode_split

    z = embedded["npz"]
    assert set(z) == {
        "index", "labels", "label_names", "factors", "factor_names", "mu", "logvar", "scatter", "scatter_axes"
    }  # fmt: skip
    index = torch.from_numpy(z["index"])
    torch.testing.assert_close(index, pick_examples(50, N, 1))
    assert z["mu"].shape == z["logvar"].shape == (N, LATENT) and z["scatter"].shape == (N, 2)
    trained = read_checkpoint(trained_run, "cpu")
    data = load_data(trained, None)
    split = data.test.subset(index)
    torch.testing.assert_close(
        torch.from_numpy(z["mu"]), encode_split(trained.model, split, data.binarize, 1)
    )
    with torch.no_grad():
        _, logvar = trained.model.encode(split.images.float() / 255)
    torch.testing.assert_close(torch.from_numpy(z["logvar"]), logvar, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(z["labels"], split.labels.numpy())
    np.testing.assert_array_equal(z["factors"], split.factors.float().numpy())
    assert z["factor_names"].tolist() == data.factor_names and z["label_names"].tolist() == data.label_names
    assert z["scatter_axes"][0].startswith("PC1 (")


def test_the_csv_has_a_row_per_example_and_the_same_numbers(embedded) -> None:
    z = embedded["npz"]
    with open(embedded["folder"] / "latents.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    factors = z["factor_names"].tolist()
    mus, logvars = [f"mu_{k}" for k in range(LATENT)], [f"logvar_{k}" for k in range(LATENT)]
    assert header == ["index", "label", "label_name", *factors, *mus, *logvars, "scatter_x", "scatter_y"]
    assert len(rows) == N
    assert [int(r["index"]) for r in rows] == z["index"].tolist()
    assert [r["label_name"] for r in rows] == [z["label_names"][k] for k in z["labels"]]
    np.testing.assert_allclose([[float(r[c]) for c in mus] for r in rows], z["mu"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([[float(r[f]) for f in factors] for r in rows], z["factors"], rtol=1e-6)


def test_the_scatter_is_a_picture_logged_to_the_run(embedded, trained_run: Path) -> None:
    from PIL import Image

    with Image.open(embedded["folder"] / "scatter.png") as picture:
        assert picture.width > 300 and picture.height > 300
    assert "scatter.png" in embedded["result"].stderr
    assert any((trained_run / "tensorboard").iterdir())


def test_projection_is_the_codes_pca_or_tsne() -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    codes = rng.normal(size=(25, 5)).astype(np.float32)
    two = codes[:, :2]
    xy, axes = project(two, "tsne", 0, 30.0)
    np.testing.assert_array_equal(xy, two)  # a 2-D space: the dimensions themselves, whatever the method
    assert axes == ("z0", "z1")
    xy, axes = project(codes, "pca", 0, 30.0)
    expected = PCA(2).fit_transform(codes.astype(np.float64))
    np.testing.assert_allclose(np.abs(xy), np.abs(expected), rtol=1e-4, atol=1e-5)  # up to the signs
    assert axes[0].startswith("PC1") and "% of the variance" in axes[1]
    xy, axes = project(codes, "tsne", 0, 5.0)
    assert xy.shape == (25, 2) and np.isfinite(xy).all() and axes == ("t-SNE 1", "t-SNE 2")
    with pytest.raises(DataError, match="perplexity=30 must be below the number of examples"):
        project(codes, "tsne", 0, 30.0)


def test_pick_examples_is_a_seeded_subset_in_order() -> None:
    picked = pick_examples(100, 10, 3)
    assert len(picked) == 10 and (picked.diff() > 0).all()
    torch.testing.assert_close(picked, pick_examples(100, 10, 3))
    assert not torch.equal(picked, pick_examples(100, 10, 4))
    torch.testing.assert_close(pick_examples(5, 0, 0), torch.arange(5))
    torch.testing.assert_close(pick_examples(5, 10, 0), torch.arange(5))


def test_a_scatter_without_labels_or_with_many(tmp_path: Path) -> None:
    xy = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    draw_scatter(xy, None, [], ("z0", "z1"), "no labels", tmp_path / "plain.png")
    draw_scatter(xy, torch.arange(40) % 25, [], ("z0", "z1"), "25 classes", tmp_path / "many.png")
    assert (tmp_path / "plain.png").stat().st_size > 0 and (tmp_path / "many.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_embed_help_and_config(tmp_path: Path) -> None:
    from vae_cli.cli import compose_config
    from vae_cli.config import validate_embed_config

    result = vae(["embed", "--help"], tmp_path)
    assert result.returncode == 0 and "method" in result.stdout and "perplexity" in result.stdout
    cfg = compose_config(["ckpt=run", "method=tsne"], "embed")
    validate_embed_config(cfg)
    assert cfg.split == "test" and cfg.n == 5000 and cfg.method == "tsne"


def test_bad_embed_commands_stop_with_one_line(trained_run: Path, tmp_path: Path) -> None:
    ckpt = f"ckpt={trained_run}"
    jobs = {
        "perplexity": (["embed", ckpt, "method=tsne", "n=10"], tmp_path / "a"),  # once the codes are there
        "suffix": (["embed", ckpt, "out=latents.png"], tmp_path / "b"),  # before Hydra starts
    }
    results = fork_all(jobs)
    expected = {
        "perplexity": "perplexity=30 must be below the number of examples (10)",
        "suffix": "the main output of vae embed is .npz",
    }
    for name, text in expected.items():
        assert text in one_error(results[name].returncode, results[name].stderr), name
    assert not (tmp_path / "a" / "outputs").exists() and not (tmp_path / "b" / "outputs").exists()


def test_the_embed_config_refuses_bad_values() -> None:
    from vae_cli.cli import compose_config
    from vae_cli.config import validate_embed_config
    from vae_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt is required: vae embed ckpt="):
        validate_embed_config(compose_config([], "embed"))
    with pytest.raises(ConfigError, match="method=umap is invalid: choose one of pca, tsne"):
        validate_embed_config(compose_config(["ckpt=run", "method=umap"], "embed"))
    with pytest.raises(ConfigError, match="n=-1 is invalid"):
        validate_embed_config(compose_config(["ckpt=run", "n=-1"], "embed"))


def test_embed_never_overwrites(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "latents.npz"
    first = vae(["embed", f"ckpt={trained_run}", "n=8", f"out={out}"], tmp_path)
    ok({"r": first}, "r")
    assert out.is_file() and (tmp_path / "latents.csv").is_file() and (tmp_path / "latents.png").is_file()
    again = vae(["embed", f"ckpt={trained_run}", "n=8", f"out={out}"], tmp_path)
    assert "already exists" in one_error(again.returncode, again.stderr)
