"""`vae reconstruct` (vae_cli/commands/reconstruct.py) end to end on the session's tiny checkpoint
(`trained_run`), of a split and of a folder of the user's images, each run in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import ok, run_folder, vae_all
from tests.helpers.data import SIZE, grid_size, png_size, write_inputs


@pytest.fixture(scope="module")
def runs(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("reconstruct")
    inputs = write_inputs(root / "inputs")
    commands = {
        "reconstruct": [
            "reconstruct",
            f"ckpt={trained_run}",
            "split=test",
            "n=10",
            "nrow=5",
            "log_to_run=true",
        ],
        "reconstruct_input": ["reconstruct", f"ckpt={trained_run}", f"input={inputs}"],
    }
    return {"root": root / "runs", "run_dir": trained_run, **vae_all(commands, root / "runs")}


def test_reconstruct_puts_originals_above_reconstructions(runs) -> None:
    ok(runs, "reconstruct")
    folder = run_folder(runs, "reconstruct", "reconstruct")
    # 10 images in rows of 5: original row, reconstruction row, original row, reconstruction row
    assert png_size(folder / "reconstructions.png") == grid_size(rows=4, cols=5, scale=4)


def test_reconstruct_own_images_converted_and_non_images_skipped(runs) -> None:
    result = ok(runs, "reconstruct_input")
    folder = run_folder(runs, "reconstruct_input", "reconstruct")
    assert png_size(folder / "reconstructions.png") == grid_size(rows=2, cols=2, scale=4)
    assert sorted(p.name for p in (folder / "reconstructions").iterdir()) == [
        "0000_grey.png",
        "0001_wide.png",
    ]
    assert png_size(folder / "reconstructions" / "0001_wide.png") == (SIZE, SIZE)
    # one reader for every folder of images (vae_cli.data.readers): a broken image is skipped with a
    # warning, a file without an image extension is ignored with a note
    assert "skipped 1 unreadable" in result.stderr and "broken.png" in result.stderr
    assert "ignored 1 file(s) without an image extension" in result.stderr and "notes.txt" in result.stderr
