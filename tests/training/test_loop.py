"""The training loop (vae_cli/training/loop.py): `vae train` writes everything (run in this process,
through the real CLI), on synthetic data and on IDX files; early stopping; the in-memory fast path gives
the same run as the DataLoader path; and the loop reads the device once per log interval, not per step.

No timing here: speed is measured by benchmarks/bench.py (`make bench`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import vae_cli.training.loop
import vae_cli.training.meter
from tests.helpers.cli import only_run_dir, vae
from tests.helpers.data import TINY_SYNTHETIC, TINY_TRAIN
from vae_cli.checkpoint import load_checkpoint
from vae_cli.cli import compose_config
from vae_cli.config import LossConfig, ModelConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model


def test_train_synthetic_writes_everything(tmp_path: Path) -> None:
    result = vae(["train", *TINY_SYNTHETIC, "train.epochs=2", "train.log_every=2"], tmp_path)
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
    result = vae(args, tmp_path, env={"VAE_DATA_DIR": str(mnist_root)})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["steps"] == 4 and math.isfinite(metrics["test"]["loss"])


def test_early_stopping_and_plateau(tmp_path: Path) -> None:
    # A learning rate of ~0 never improves the val loss after the first epoch: stop after 2 more.
    options = [
        *TINY_SYNTHETIC,
        "train.image_every=0",
        "train.epochs=10",
        "train.lr=1e-12",
        "train.scheduler=plateau",
        "train.plateau_patience=0",
        "train.early_stop_patience=2",
    ]
    result = vae(["train", *options], tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["epochs"] < 10 and "early stop" in result.stderr


# ----------------------------------------------------------------------------- training, both paths


def compose_train(overrides: list[str]) -> DictConfig:
    return compose_config(overrides)


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every tensor -> Python read (.item(), .tolist(), float(), int(), bool()) that
    the training loop (vae_cli/training/loop.py and its meter) makes while train_epoch runs. Reads elsewhere
    (torch's optimiser) are not counted."""
    reads: list[str] = []
    inside = [False]
    loop_files = {str(Path(m.__file__).resolve()) for m in (vae_cli.training.loop, vae_cli.training.meter)}

    def recording(name: str) -> Any:
        real = getattr(torch.Tensor, name)

        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            if inside[0] and str(Path(caller.f_code.co_filename).resolve()) in loop_files:
                reads.append(f"{name} at {Path(caller.f_code.co_filename).name}:{caller.f_lineno}")
            return real(self, *args, **kwargs)

        return method

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, recording(name))
    real_epoch = vae_cli.training.loop.train_epoch

    def epoch(*args: Any, **kwargs: Any) -> dict[str, float]:
        inside[0] = True
        try:
            return real_epoch(*args, **kwargs)
        finally:
            inside[0] = False

    monkeypatch.setattr(vae_cli.training.loop, "train_epoch", epoch)
    yield reads


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_training_gives_the_same_run_in_memory_and_through_a_dataloader(
    tmp_path: Path, binarize: str
) -> None:
    runs = {}
    for in_memory in ("true", "false"):
        cfg = compose_train([*TINY_TRAIN, f"dataset.in_memory={in_memory}", f"dataset.binarize={binarize}"])
        runs[in_memory] = vae_cli.training.loop.train(cfg, tmp_path / in_memory)
    fast, loader = runs["true"], runs["false"]
    assert fast["steps"] == loader["steps"] == math.ceil(200 / 32)
    assert fast["best_epoch"] == loader["best_epoch"] == 1
    for split in ("train", "val", "test"):
        for key in ("loss", "recon", "kl", "neg_elbo"):
            assert fast[split][key] == pytest.approx(loader[split][key], rel=1e-6, abs=1e-6), (split, key)
            assert math.isfinite(fast[split][key])
    # the same weights, bit for bit or nearly
    weights = [torch.load(tmp_path / p / "checkpoints" / "last.ckpt")["model"] for p in ("true", "false")]
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=1e-6, atol=1e-7, msg=name)


def test_the_loop_reads_the_device_per_log_interval_not_per_step(
    tmp_path: Path, host_reads: list[str]
) -> None:
    def reads(batch_size: int, log_every: int) -> tuple[int, int]:
        host_reads.clear()
        overrides = [*TINY_TRAIN, f"train.batch_size={batch_size}", f"train.log_every={log_every}"]
        metrics = vae_cli.training.loop.train(
            compose_train(overrides), tmp_path / f"{batch_size}-{log_every}"
        )
        return len(host_reads), metrics["steps"]

    few, steps_few = reads(32, 10_000)  # one log interval: the epoch
    many, steps_many = reads(8, 10_000)
    assert (steps_few, steps_many) == (7, 25)
    assert many == few <= 4, host_reads  # 3.5x the steps, not one read more
    logged, _ = reads(8, 5)  # five intervals
    assert few < logged < steps_many, host_reads
