"""The pictures (and numbers) the checkpoint commands write (issue 14): vectors as CSV/.npy in the data's
units (item 1), real grey originals above reconstructions of the model's binarised input everywhere
(item 2), readable cell sizes (item 3), labelled extremes and traversals that hide inactive dimensions
(item 4). In-process: one tiny model per kind of data, trained once."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vae_cli.commands.reconstruct as reconstruct_module
import vae_cli.commands.sample as sample_module
import vae_cli.commands.score as score_module
from tests.helpers.data import grid_size
from vae_cli.api import read_checkpoint
from vae_cli.checkpoint import save_checkpoint
from vae_cli.cli import compose_config
from vae_cli.data import create_dataset
from vae_cli.metrics import ACTIVE_THRESHOLD
from vae_cli.pictures import PAD
from vae_cli.training.loop import log_images, train

SIZE, LATENT = 16, 4


def png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def cell(picture: np.ndarray, row: int, col: int, size: int = SIZE, scale: int = 1) -> np.ndarray:
    """The cell at (row, col) of a plain grid, back at its native size."""
    step = (size + PAD) * scale
    y, x = PAD * scale + row * step, PAD * scale + col * step
    return picture[y : y + size * scale : scale, x : x + size * scale : scale]


def _train(root: Path, overrides: list[str]) -> Path:
    run_dir = root / "run"
    cfg = compose_config([*overrides, f"data_dir={root}", "train.epochs=1", "train.image_every=0"])
    train(cfg, run_dir)
    return run_dir


def command(name: str, run_dir: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_config([f"ckpt={run_dir}", f"out={out}", *overrides], name)
    run = {
        "sample": sample_module.sample,
        "reconstruct": reconstruct_module.reconstruct,
        "score": score_module.score,
    }[name]
    out.mkdir(parents=True, exist_ok=True)
    return run(cfg, out)


def grid_of(model: dict, name: str, folder: str, *overrides: str) -> tuple[int, int]:
    """(width, height) of the grid that command `name` of model["run_dir"] writes in model["root"]/folder."""
    out = model["root"] / folder
    command(name, model["run_dir"], out, *overrides)
    picture = {"sample": "samples.png", "reconstruct": "reconstructions.png"}[name]
    return png(out / picture).shape[::-1]


@pytest.fixture(scope="module")
def grey(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model of grey 16x16 images trained binarised (dynamic): its originals are not binary."""
    root = tmp_path_factory.mktemp("grey")
    g = torch.Generator().manual_seed(0)
    images = (30 + torch.rand(200, SIZE, SIZE, generator=g) * 195).to(torch.uint8)  # grey levels 30..225
    np.save(root / "grey.npy", images.numpy())
    overrides = [
        "dataset=tensor",
        "dataset.path=grey.npy",
        "dataset.binarize=dynamic",
        "model=mlp",
        "model.hidden_dims=[32]",
        f"latent_dim={LATENT}",
        "train.batch_size=32",
    ]
    run_dir = _train(root, overrides)
    data = create_dataset(compose_config([*overrides, f"data_dir={root}"]).dataset, root)
    return {"root": root, "run_dir": run_dir, "data": data}


def _capture_reconstruct_inputs(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module) -> list:
    seen: list[torch.Tensor] = []
    original = type(model).reconstruct

    def spy(self, x):  # noqa: ANN001, ANN202
        seen.append(x.detach().cpu())
        return original(self, x)

    monkeypatch.setattr(type(model), "reconstruct", spy)
    return seen


def test_reconstruct_shows_the_grey_originals_above_reconstructions_of_the_binarised_input(
    grey: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_reconstruct_inputs(monkeypatch, read_checkpoint(grey["run_dir"]).model)
    out = grey["root"] / "rec"
    command("reconstruct", grey["run_dir"], out, "n=4", "nrow=4", "scale=1")
    picture = png(out / "reconstructions.png")
    assert picture.shape[::-1] == grid_size(rows=2, cols=4)
    real = grey["data"].test.take(range(4))[:, 0].numpy()
    for i in range(4):  # the top row is the real image, grey levels and all, not a 0/1 draw
        np.testing.assert_allclose(cell(picture, 0, i), real[i], atol=1)
    assert len(np.unique(cell(picture, 0, 0))) > 20
    # what was reconstructed is what the model takes: binarised like its training data
    assert seen and set(torch.cat(seen).unique().tolist()) <= {0.0, 1.0}


def test_reconstruct_cells_are_at_least_64_pixels_by_default(grey: dict) -> None:
    assert grid_of(grey, "reconstruct", "rec_default", "n=6", "nrow=3") == grid_size(rows=4, cols=3, scale=4)
    scale2 = grid_of(grey, "reconstruct", "rec_scale2", "n=6", "nrow=3", "scale=2")
    assert scale2 == grid_size(rows=4, cols=3, scale=2)


def test_tensorboard_reconstructions_show_the_grey_originals_too(
    grey: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = read_checkpoint(grey["run_dir"]).model
    seen = _capture_reconstruct_inputs(monkeypatch, model)

    class FakeBoard:
        grids: dict = {}

        def image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
            self.grids[tag] = images

    tb = FakeBoard()
    batch = grey["data"].val.take(range(8))
    log_images(tb, model, [batch], grey["data"], seed=0, step=1)
    grid = tb.grids["val/reconstructions"]
    torch.testing.assert_close(grid[:8], batch.float() / 255)  # the first row: the real images
    assert set(torch.cat(seen).unique().tolist()) <= {0.0, 1.0}  # reconstructed: the binarised input


def test_extremes_png_shows_grey_inputs_and_says_which_half_is_which_with_scores(
    grey: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_reconstruct_inputs(monkeypatch, read_checkpoint(grey["run_dir"]).model)
    calls: list[dict] = []
    real_labelled = score_module.labelled_picture

    def spy(images, ncol, scale=None, **labels):  # noqa: ANN001, ANN202
        calls.append({"images": images, "ncol": ncol, "scale": scale, **labels})
        return real_labelled(images, ncol, scale, **labels)

    monkeypatch.setattr(score_module, "labelled_picture", spy)
    out = grey["root"] / "score"
    command("score", grey["run_dir"], out, "n=3", "elbo_samples=2")
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    most, least = calls
    assert " ".join(most["title"]).startswith("most anomalous of 20 (score -ELBO, nats")
    assert " ".join(least["title"]).startswith("least anomalous of 20")
    assert most["row_labels"] == least["row_labels"] == ["input", "reconstruction"]
    for call, picked in ((most, rows[:3]), (least, rows[::-1][:3])):
        captions = call["captions"][:3]
        for caption, row in zip(captions, picked, strict=True):
            rank, value = caption.split()
            assert rank == f"#{row['rank']}" and abs(float(value) - float(row["score"])) < 0.06
        real = grey["data"].test.take([int(r["index"]) for r in picked]).float() / 255
        torch.testing.assert_close(call["images"][:3], real)  # the inputs as they are: grey
    assert set(torch.cat(seen).unique().tolist()) <= {0.0, 1.0}  # reconstructions of what was scored
    assert most["scale"] is None
    with Image.open(out / "extremes.png") as img:  # two labelled halves of 64-px cells (16 px x 4)
        assert img.height > 2 * 2 * 64 and img.width > 3 * 64


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An MLP of the synthetic shapes, and a copy of its checkpoint whose latent dimension 0 is made
    inactive (its posterior mean no longer depends on x) and the others clearly active (one epoch of
    training leaves them all nearly collapsed)."""
    root = tmp_path_factory.mktemp("shapes")
    run_dir = _train(
        root,
        [
            "dataset=synthetic",
            "dataset.size=240",
            "dataset.val_size=40",
            "dataset.test_size=40",
            f"dataset.image_size={SIZE}",
            "model=mlp",
            "model.hidden_dims=[64]",
            f"latent_dim={LATENT}",
            "train.batch_size=32",
        ],
    )
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    payload = torch.load(ckpt, weights_only=True)
    last = [k for k, v in payload["model"].items() if k.startswith("encoder") and v.shape[0] == 2 * LATENT][
        -2:
    ]
    weight, bias = last
    payload["model"][weight][0] = 0.0  # mu_0 = its bias, whatever x is
    payload["model"][bias][0] = 0.0
    payload["model"][weight][1:LATENT] *= 100.0  # mu_1.. move with x
    dead = root / "dead"
    save_checkpoint(dead / "checkpoints" / "best.ckpt", payload)
    return {"root": root, "run_dir": run_dir, "dead": dead}


def test_sample_grid_cells_are_at_least_64_pixels_unless_scale_1(shapes: dict) -> None:
    assert grid_of(shapes, "sample", "samples", "n=6", "nrow=3") == grid_size(rows=2, cols=3, scale=4)
    assert grid_of(shapes, "sample", "samples1", "n=6", "nrow=3", "scale=1") == grid_size(rows=2, cols=3)


def _spy_labels(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    real = sample_module.labelled_picture

    def spy(images, ncol, scale=None, **labels):  # noqa: ANN001, ANN202
        calls.append(labels)
        return real(images, ncol, scale, **labels)

    monkeypatch.setattr(sample_module, "labelled_picture", spy)
    return calls


def test_traverse_hides_inactive_dimensions_and_labels_rows_and_columns(
    shapes: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    calls = _spy_labels(monkeypatch)
    out = shapes["root"] / "traverse"
    command("sample", shapes["dead"], out, "mode=traverse", "steps=5", "range=[-2,2]")
    info = json.loads((out / "traverse.json").read_text())
    assert 0 in info["hidden_inactive"] and 0 not in [r["dim"] for r in info["rows"]]
    assert len(info["rows"]) + len(info["hidden_inactive"]) == LATENT
    (labels,) = calls
    assert labels["row_labels"] == [f"z{r['dim']}  KL {r['kl']:.2f}" for r in info["rows"]]
    assert labels["col_labels"] == ["-2", "-1", "0", "1", "2"]
    title = " ".join(labels["title"])
    assert "row = latent dimension" in title and "column = its value z" in title
    assert f"{len(info['hidden_inactive'])} inactive dimension(s) hidden" in title
    assert f"<= {ACTIVE_THRESHOLD:g}" in title and "show_inactive=true" in title
    with Image.open(out / "traverse.png") as img:  # labelled: wider and taller than the bare grid
        bare = grid_size(rows=len(info["rows"]), cols=5, scale=4)
        assert img.width > bare[0] and img.height > bare[1]

    calls.clear()
    out_all = shapes["root"] / "traverse_all"
    command("sample", shapes["dead"], out_all, "mode=traverse", "steps=5", "show_inactive=true")
    info = json.loads((out_all / "traverse.json").read_text())
    assert sorted(r["dim"] for r in info["rows"]) == list(range(LATENT)) and info["hidden_inactive"] == []
    assert "hidden" not in " ".join(calls[0]["title"])


def test_traversal_dims_rank_by_kl_among_the_active_and_show_all_when_none_is() -> None:
    kl = torch.tensor([0.5, 3.0, 0.01, 2.0])
    variances = torch.tensor([0.5, 0.9, 0.001, 0.02], dtype=torch.float64)
    dims, hidden = sample_module.traversal_dims(kl, variances, 0, show_inactive=False)
    assert dims.tolist() == [1, 3, 0] and hidden == [2]
    dims, hidden = sample_module.traversal_dims(kl, variances, 2, show_inactive=False)
    assert dims.tolist() == [1, 3]
    dims, hidden = sample_module.traversal_dims(kl, variances, 0, show_inactive=True)
    assert dims.tolist() == [1, 3, 0, 2] and hidden == []
    dims, hidden = sample_module.traversal_dims(kl, torch.zeros(4), 0, show_inactive=False)
    assert dims.tolist() == [1, 3, 0, 2] and hidden == []  # nothing active: every row, with a warning


# --- vectors --------------------------------------------------------------------------------------------

MEANS, STDS = np.array([170.0, 70.0, 36.6]), np.array([10.0, 15.0, 0.5])


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A Gaussian MLP on a CSV of three named features (and a label column), standardised."""
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    values = MEANS + STDS * rng.standard_normal((300, 3))
    with open(root / "people.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["height", "weight", "temp", "label"])
        for i, row in enumerate(values):
            writer.writerow([*(f"{v:.4f}" for v in row), "a" if i % 2 else "b"])
    run_dir = _train(
        root,
        [
            "dataset=tensor",
            f"dataset.path={root / 'people.csv'}",
            "dataset.label_column=label",
            "dataset.standardize=true",
            "model=mlp",
            "model.hidden_dims=[16]",
            "loss=gaussian",
            "loss.variance=global",
            "latent_dim=2",
            "train.batch_size=32",
        ],
    )
    return {"root": root, "run_dir": run_dir, "values": values.astype(np.float32)}


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_sample_writes_vectors_as_csv_and_npy_in_the_datas_units(table: dict) -> None:
    out = table["root"] / "samples"
    result = command("sample", table["run_dir"], out, "n=200")
    assert not (out / "samples.png").exists() and sorted(p.name for p in out.glob("samples.*")) == [
        "samples.csv",
        "samples.npy",
    ]
    header, rows = read_csv(out / "samples.csv")
    assert header == ["height", "weight", "temp"]  # the training file's columns, its label left out
    values = np.load(out / "samples.npy")
    assert values.shape == (200, 3) and len(rows) == 200
    np.testing.assert_allclose(np.array(rows, dtype=np.float64), values, rtol=1e-5)
    # un-standardised: around the data's means in its own units (not around 0)
    assert np.all(np.abs(values.mean(0) - MEANS) < 2 * STDS), values.mean(0)
    assert str(out / "samples.csv") in result["files"]


def test_traverse_of_vectors_says_which_dimension_and_value_each_row_is(table: dict) -> None:
    out = table["root"] / "traverse"
    command("sample", table["run_dir"], out, "mode=traverse", "steps=3", "show_inactive=true")
    header, rows = read_csv(out / "traverse.csv")
    assert header == ["dim", "z", "height", "weight", "temp"]
    assert len(rows) == 2 * 3 and [r[1] for r in rows[:3]] == ["-3", "0", "3"]
    assert np.load(out / "traverse.npy").shape == (6, 3)


def test_reconstruct_writes_originals_and_reconstructions_of_vectors(table: dict) -> None:
    out = table["root"] / "rec"
    command("reconstruct", table["run_dir"], out, "n=10", "split=test")
    assert not (out / "reconstructions.png").exists()
    header, originals = read_csv(out / "originals.csv")
    assert header == ["example", "height", "weight", "temp"]
    assert read_csv(out / "reconstructions.csv")[0] == header and len(originals) == 10
    for row in originals:  # the file's own rows, back in its units
        np.testing.assert_allclose(
            np.array(row[1:], dtype=np.float64), table["values"][int(row[0])], rtol=1e-4, atol=1e-3
        )
    recon = np.load(out / "reconstructions.npy")
    assert recon.shape == (10, 3) and np.all(np.abs(recon.mean(0) - MEANS) < 3 * STDS)


def test_feature_names_come_from_the_checkpoint_else_the_file_else_f0(table: dict, tmp_path: Path) -> None:
    from vae_cli.tabular import feature_names

    trained = read_checkpoint(table["run_dir"])
    assert trained.feature_names == ["height", "weight", "temp"]  # the checkpoint keeps them
    trained.dataset.path = str(tmp_path / "moved.csv")
    assert feature_names(trained, 3) == ["height", "weight", "temp"]
    trained.feature_names = None  # an older checkpoint: read from the training file, while it is there
    assert feature_names(trained, 3) == ["f0", "f1", "f2"]
