"""`vae train` end to end, in a subprocess, through the real CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY_SYNTHETIC, only_run_dir, run_vae
from vae_cli.checkpoint import load_checkpoint
from vae_cli.config import LossConfig, ModelConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model


def test_help_lists_subcommands(tmp_path: Path) -> None:
    result = run_vae(["--help"], tmp_path)
    assert result.returncode == 0 and "train" in result.stdout


def test_unknown_subcommand_is_one_line(tmp_path: Path) -> None:
    result = run_vae(["trian"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown command 'trian': choose one of " + result.stderr.split("choose one of ")[1].strip()
    ]
    assert "train" in result.stderr


def test_cfg_job_prints_the_config_without_training(tmp_path: Path) -> None:
    result = run_vae(["train", "latent_dim=7", "--cfg", "job"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "latent_dim: 7" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_train_synthetic_writes_everything(tmp_path: Path) -> None:
    result = run_vae(["train", *TINY_SYNTHETIC, "train.epochs=2", "train.log_every=2"], tmp_path)
    assert result.returncode == 0, result.stderr
    run = only_run_dir(tmp_path)
    assert (run / ".hydra" / "config.yaml").is_file()
    assert "epoch 2/2" in (run / "train.log").read_text()

    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        for key in ("loss", "recon", "kl"):
            assert math.isfinite(metrics[split][key]), (split, key)
        assert metrics[split]["kl"] >= 0
    assert metrics["epochs"] == 2 and metrics["steps"] == 2 * math.ceil(160 / 32)

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/recon",
        "train/kl",
        "train/beta",
        "train/lr",
        "train/examples_per_sec",
        "val/loss",
        "val/recon",
        "val/kl",
        "test/loss",
    } <= scalars
    assert {"val/reconstructions", "samples/prior"} <= set(events.Tags()["images"])

    # A checkpoint alone rebuilds its model.
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = load_checkpoint(run / "checkpoints" / name)
        assert ckpt["epoch"] >= 1 and ckpt["config"]["latent_dim"] == 4
    cfg = ckpt["config"]
    model = create_model(
        ModelConfig(**cfg["model"]),
        tuple(ckpt["image_shape"]),
        cfg["latent_dim"],
        create_likelihood(LossConfig(**cfg["loss"])),
    )
    model.load_state_dict(ckpt["model"])
    assert model.sample(3).shape == (3, 1, 16, 16)
    assert not list(run.parent.parent.glob("**/*.tmp"))  # atomic writes leave no temporary files


def test_train_mlp_on_idx_files_through_the_mnist_loader(tmp_path: Path, mnist_root: Path) -> None:
    args = [
        "train",
        "dataset=mnist",
        "model=mlp",
        "model.hidden_dims=[32]",
        "latent_dim=2",
        "dataset.val_size=20",
        "dataset.download=false",
        "train.epochs=1",
        "train.batch_size=25",
    ]
    result = run_vae(args, tmp_path, env={"VAE_DATA_DIR": str(mnist_root)})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["steps"] == 4 and math.isfinite(metrics["test"]["loss"])


def test_resume_equals_uninterrupted_and_seed_is_deterministic(tmp_path: Path) -> None:
    common = [*TINY_SYNTHETIC, "train.image_every=0", "train.kl_warmup_epochs=1.5"]
    straight, again, first, resumed = (tmp_path / name for name in ("straight", "again", "first", "resumed"))
    for folder in (straight, again, first, resumed):
        folder.mkdir()
    assert run_vae(["train", *common, "train.epochs=3"], straight).returncode == 0
    assert run_vae(["train", *common, "train.epochs=3"], again).returncode == 0
    assert run_vae(["train", *common, "train.epochs=1"], first).returncode == 0
    last = only_run_dir(first) / "checkpoints" / "last.ckpt"
    result = run_vae(["train", *common, "train.epochs=3", f"train.resume={last}"], resumed)
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
    assert (
        run_vae(["train", *TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"], tmp_path).returncode == 0
    )
    last = only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    result = run_vae(
        ["train", *TINY_SYNTHETIC, "latent_dim=5", "train.epochs=2", f"train.resume={last}"], tmp_path
    )
    assert result.returncode == 2
    assert "latent_dim" in result.stderr and "Traceback" not in result.stderr


def test_multirun_sweeps_beta_into_separate_job_folders(tmp_path: Path) -> None:
    result = run_vae(
        ["train", "-m", *TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0", "beta=0.5,4"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in (tmp_path / "outputs" / "train" / "multirun").glob("*/*/*") if p.is_dir())
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    betas = [load_checkpoint(j / "checkpoints" / "last.ckpt")["config"]["beta"] for j in jobs]
    assert betas == [0.5, 4.0]


def test_compile_and_bf16_train_on_cpu(tmp_path: Path) -> None:
    args = [
        "train",
        *(o for o in TINY_SYNTHETIC if not o.startswith("model.")),  # conv's keys
        "model=mlp",
        "train.epochs=1",
        "train.image_every=0",
        "train.compile=true",
        "train.precision=bf16-mixed",
    ]
    result = run_vae(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert math.isfinite(json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())["test"]["loss"])
