"""A run's state and resuming it (vae_cli/training/state.py): a resumed run equals an uninterrupted one,
with every quality option on too (EMA, schedules, IWAE, resnet); a seed is deterministic; a checkpoint
of another model is refused. The runs go through the real CLI in this process; the refused one in a
forked child, for its exit code and stderr."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import fork_vae, only_run_dir, vae
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.checkpoint import load_checkpoint


def straight_and_resumed(root: Path, options: list[str], epochs: int, *straight: str) -> dict[str, Path]:
    """`vae train` of `options` for `epochs` epochs in root/<name>/ for each of `straight`, and for one
    epoch in root/first/ and then resumed to `epochs` in root/resumed/: name -> its run folder."""
    names = (*straight, "first", "resumed")
    for name in names:
        (root / name).mkdir()
    for name in straight:
        assert vae(["train", *options, f"train.epochs={epochs}"], root / name).returncode == 0
    assert vae(["train", *options, "train.epochs=1"], root / "first").returncode == 0
    last = only_run_dir(root / "first") / "checkpoints" / "last.ckpt"
    result = vae(["train", *options, f"train.epochs={epochs}", f"train.resume={last}"], root / "resumed")
    assert result.returncode == 0, result.stderr
    return {name: only_run_dir(root / name) for name in names}


def test_resume_equals_uninterrupted_and_seed_is_deterministic(tmp_path: Path) -> None:
    common = [*TINY_SYNTHETIC, "train.image_every=0", "train.kl_warmup_epochs=1.5"]
    runs = straight_and_resumed(tmp_path, common, 3, "straight", "again")

    expected = json.loads((runs["straight"] / "metrics.json").read_text())
    for folder in (runs["again"], runs["resumed"]):
        got = json.loads((folder / "metrics.json").read_text())
        assert got["steps"] == expected["steps"]
        for split in ("train", "val", "test"):
            for key in ("loss", "recon", "kl"):
                assert got[split][key] == pytest.approx(expected[split][key], rel=1e-6, abs=1e-6), (
                    folder,
                    split,
                )
    a = load_checkpoint(runs["straight"] / "checkpoints" / "last.ckpt")["model"]
    b = load_checkpoint(runs["resumed"] / "checkpoints" / "last.ckpt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_resume_with_another_model_is_refused(tmp_path: Path) -> None:
    assert vae(["train", *TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"], tmp_path).returncode == 0
    last = only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    result = fork_vae(
        ["train", *TINY_SYNTHETIC, "latent_dim=5", "train.epochs=2", f"train.resume={last}"], tmp_path
    )
    assert result.returncode == 2
    assert "latent_dim" in result.stderr and "Traceback" not in result.stderr


def test_all_options_train_end_to_end_and_resume_exactly(tmp_path: Path) -> None:
    options = [
        *TINY_SYNTHETIC,
        "model=resnet",
        "model.channels=[8,16]",
        "objective=iwae",
        "objective.k=3",
        "train.free_bits=0.05",
        "train.scheduler=plateau",
        "train.ema=0.9",
        "train.image_every=0",
    ]
    runs = straight_and_resumed(tmp_path, options, 2, "straight")

    expected = json.loads((runs["straight"] / "metrics.json").read_text())
    got = json.loads((runs["resumed"] / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert got[split]["loss"] == pytest.approx(expected[split]["loss"], rel=1e-5)
        assert math.isfinite(got[split]["neg_elbo"]) and got[split]["loss"] <= got[split]["neg_elbo"] + 1.0

    ckpt = load_checkpoint(runs["straight"] / "checkpoints" / "last.ckpt")
    assert ckpt["ema"] is not None and ckpt["scheduler"] is not None
    # The saved "model" is the EMA's average, not the raw weights the optimiser stepped.
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"])
