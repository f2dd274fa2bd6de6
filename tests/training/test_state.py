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


def test_resume_equals_uninterrupted_and_seed_is_deterministic(tmp_path: Path) -> None:
    common = [*TINY_SYNTHETIC, "train.image_every=0", "train.kl_warmup_epochs=1.5"]
    straight, again, first, resumed = (tmp_path / name for name in ("straight", "again", "first", "resumed"))
    for folder in (straight, again, first, resumed):
        folder.mkdir()
    assert vae(["train", *common, "train.epochs=3"], straight).returncode == 0
    assert vae(["train", *common, "train.epochs=3"], again).returncode == 0
    assert vae(["train", *common, "train.epochs=1"], first).returncode == 0
    last = only_run_dir(first) / "checkpoints" / "last.ckpt"
    result = vae(["train", *common, "train.epochs=3", f"train.resume={last}"], resumed)
    assert result.returncode == 0, result.stderr

    expected = json.loads((only_run_dir(straight) / "metrics.json").read_text())
    for folder in (again, resumed):
        got = json.loads((only_run_dir(folder) / "metrics.json").read_text())
        assert got["steps"] == expected["steps"]
        for split in ("train", "val", "test"):
            for key in ("loss", "recon", "kl"):
                assert got[split][key] == pytest.approx(expected[split][key], rel=1e-6, abs=1e-6), (
                    folder,
                    split,
                )
    a = load_checkpoint(only_run_dir(straight) / "checkpoints" / "last.ckpt")["model"]
    b = load_checkpoint(only_run_dir(resumed) / "checkpoints" / "last.ckpt")["model"]
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
    straight, first, resumed = (tmp_path / n for n in ("straight", "first", "resumed"))
    for folder in (straight, first, resumed):
        folder.mkdir()
    assert vae(["train", *options, "train.epochs=2"], straight).returncode == 0
    assert vae(["train", *options, "train.epochs=1"], first).returncode == 0
    last = only_run_dir(first) / "checkpoints" / "last.ckpt"
    result = vae(["train", *options, "train.epochs=2", f"train.resume={last}"], resumed)
    assert result.returncode == 0, result.stderr

    expected = json.loads((only_run_dir(straight) / "metrics.json").read_text())
    got = json.loads((only_run_dir(resumed) / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert got[split]["loss"] == pytest.approx(expected[split]["loss"], rel=1e-5)
        assert math.isfinite(got[split]["neg_elbo"]) and got[split]["loss"] <= got[split]["neg_elbo"] + 1.0

    ckpt = load_checkpoint(only_run_dir(straight) / "checkpoints" / "last.ckpt")
    assert ckpt["ema"] is not None and ckpt["scheduler"] is not None
    # The saved "model" is the EMA's average, not the raw weights the optimiser stepped.
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"])
