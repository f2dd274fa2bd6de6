"""Optimisers and schedules (vae_cli/training/optim.py): fused Adam that resumes across implementations,
and a cosine schedule that anneals to train.min_lr over the whole run, even an extended one."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import vae_cli.training.optim
from tests.helpers.cli import only_run_dir, vae
from tests.helpers.data import TINY_SYNTHETIC, TINY_TRAIN
from vae_cli.checkpoint import load_checkpoint
from vae_cli.cli import compose_config


def test_optimizer_is_fused_where_supported_and_resumes_across_implementations() -> None:
    """Adam runs its fused kernel on CPU; a state saved by one implementation (an older checkpoint, a
    machine without the fused kernel) loads into the other and keeps this machine's, with equal steps.
    (Deep copies stand in for the checkpoint file: load_state_dict would share the tensors otherwise.)"""
    cfg = compose_config(TINY_TRAIN)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    fused = vae_cli.training.optim.create_optimizer(model, cfg)
    assert fused.param_groups[0]["fused"] is True

    def step(optimizer: torch.optim.Optimizer, net: torch.nn.Module) -> None:
        optimizer.zero_grad()
        net(torch.ones(2, 4)).square().sum().backward()
        optimizer.step()

    step(fused, model)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    plain = torch.optim.Adam(twin.parameters(), lr=cfg.train.lr)  # torch's default implementation
    plain.load_state_dict(vae_cli.training.optim.with_kernels_of(plain, copy.deepcopy(fused.state_dict())))
    assert not plain.param_groups[0]["fused"]
    back = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    back.load_state_dict(vae_cli.training.optim.with_kernels_of(back, copy.deepcopy(plain.state_dict())))
    assert back.param_groups[0]["fused"] is True
    step(plain, twin)
    step(back, model)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_cosine_anneals_to_min_lr_over_the_run_even_when_extended(tmp_path: Path) -> None:
    options = [
        *(o for o in TINY_SYNTHETIC if not o.startswith("model.")),  # conv's keys
        "model=mlp",
        "train.image_every=0",
        "train.scheduler=cosine",
        "train.min_lr=1e-5",
    ]
    assert vae(["train", *options, "train.epochs=1"], tmp_path).returncode == 0
    last = only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5, rel=1e-3)
    extended = tmp_path / "extended"
    extended.mkdir()
    assert vae(["train", *options, "train.epochs=2", f"train.resume={last}"], extended).returncode == 0
    ckpt = load_checkpoint(only_run_dir(extended) / "checkpoints" / "last.ckpt")
    assert ckpt["scheduler"]["T_max"] == ckpt["step"]  # the schedule spans the extended run
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5, rel=1e-3)
