"""`vae sample` (vae_cli/commands/sample.py) end to end on the session's tiny checkpoint (`trained_run`),
each command run in this process and in its own folder; and its pieces: slerp and the traversal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import ok, run_folder, vae_all
from tests.helpers.data import LATENT, SIZE, grid_size, png_size


@pytest.fixture(scope="module")
def runs(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every sample command below, on the session's checkpoint."""
    root = tmp_path_factory.mktemp("sample")
    run_dir, ckpt, out = trained_run, trained_run / "checkpoints" / "best.ckpt", root / "out"
    events_before = len(list((run_dir / "tensorboard").iterdir()))
    commands = {
        "sample": [
            "sample",
            f"ckpt={run_dir}",
            "n=12",
            "nrow=4",
            "save_tensor=true",
            "seed=3",
            "log_to_run=true",
        ],
        "sample_again": [
            "sample",
            f"ckpt={ckpt}",
            "n=12",
            "nrow=4",
            "save_tensor=true",
            "seed=3",
            f"out={out}/s",
        ],
        "draw": ["sample", f"ckpt={ckpt}", "mode=draw", "n=5", "nrow=5", "save_tensor=true"],
        "traverse": ["sample", f"ckpt={run_dir}", "mode=traverse", "steps=5", "base=image"],
        "interpolate": [
            "sample",
            f"ckpt={run_dir}",
            "mode=interpolate",
            "pairs=3",
            "steps=6",
            "method=slerp",
        ],
    }
    results = vae_all(commands, root / "runs")
    return {"root": root / "runs", "run_dir": run_dir, "out": out, "events_before": events_before, **results}


def test_sample_writes_a_grid_and_the_tensor_and_logs_to_the_run(runs) -> None:
    result = ok(runs, "sample")
    folder = run_folder(runs, "sample", "sample")
    assert png_size(folder / "samples.png") == grid_size(rows=3, cols=4, scale=4)
    images = torch.load(folder / "samples.pt", weights_only=True)
    assert images.shape == (12, 1, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    assert str(folder / "samples.png") in result.stderr.replace("\n", "")  # says where it wrote
    assert (folder / ".hydra" / "config.yaml").is_file() and (folder / "sample.log").is_file()
    # log_to_run=true added event files to the training run
    assert len(list((runs["run_dir"] / "tensorboard").iterdir())) > runs["events_before"]


def test_sample_is_reproducible_and_out_is_the_whole_run_folder(runs) -> None:
    ok(runs, "sample_again")
    first = torch.load(run_folder(runs, "sample", "sample") / "samples.pt", weights_only=True)
    again = torch.load(runs["out"] / "s" / "samples.pt", weights_only=True)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (runs["out"] / "s" / "sample.log").is_file() and (runs["out"] / "s" / ".hydra").is_dir()
    assert not (runs["root"] / "sample_again" / "outputs").exists()


def test_sample_draw_gives_binary_pixels_for_a_bernoulli_model(runs) -> None:
    ok(runs, "draw")
    folder = run_folder(runs, "draw", "sample")
    images = torch.load(folder / "samples.pt", weights_only=True)
    assert images.shape == (5, 1, SIZE, SIZE)
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert png_size(folder / "samples.png") == grid_size(rows=1, cols=5, scale=4)


def test_traverse_has_a_row_per_latent_dimension_by_kl(runs) -> None:
    ok(runs, "traverse")
    folder = run_folder(runs, "traverse", "sample")
    info = json.loads((folder / "traverse.json").read_text())
    rows = info["rows"]
    width, height = png_size(folder / "traverse.png")  # labelled: larger than the bare grid of its rows
    bare = grid_size(rows=len(rows), cols=5, scale=4)
    assert width > bare[0] and height > bare[1]
    # a row per latent dimension, the inactive ones hidden by default (show_inactive=true shows them)
    assert sorted([r["dim"] for r in rows] + info["hidden_inactive"]) == list(range(LATENT))
    kls = [r["kl"] for r in rows]
    assert kls == sorted(kls, reverse=True)


def test_interpolate_has_a_row_per_pair(runs) -> None:
    ok(runs, "interpolate")
    assert png_size(run_folder(runs, "interpolate", "sample") / "interpolate.png") == grid_size(
        rows=3, cols=6, scale=4
    )


# --- the pieces --------------------------------------------------------------------------------------


def test_slerp_keeps_the_norm_and_falls_back_to_linear() -> None:
    from vae_cli.commands.sample import slerp

    a = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [4.0, 0.0, 0.0]])  # the second pair is parallel
    z = slerp(a, b, torch.linspace(0, 1, 5))
    assert z.shape == (2, 5, 3) and torch.isfinite(z).all()
    torch.testing.assert_close(z[:, 0], a)
    torch.testing.assert_close(z[:, -1], b)
    torch.testing.assert_close(z[0].norm(dim=-1), torch.ones(5))  # on the great circle
    torch.testing.assert_close(z[1, :, 0], torch.linspace(2, 4, 5))  # linear for parallel codes


def test_traversal_sweeps_one_dimension_per_row() -> None:
    from types import SimpleNamespace

    from vae_cli.commands.sample import traversal

    identity = SimpleNamespace(decode=lambda z: z, likelihood=SimpleNamespace(mean=lambda p: p))
    base = torch.tensor([0.5, -0.5, 0.25])
    values = torch.tensor([-3.0, 0.0, 3.0])
    z = traversal(identity, base, torch.tensor([2, 0]), values).view(2, 3, 3)
    torch.testing.assert_close(z[0, :, 2], values)  # row 0 sweeps dimension 2...
    torch.testing.assert_close(z[0, :, :2], base[:2].expand(3, 2))  # ...holding the others at the base
    torch.testing.assert_close(z[1, :, 0], values)
    torch.testing.assert_close(z[1, :, 1:], base[1:].expand(3, 2))
