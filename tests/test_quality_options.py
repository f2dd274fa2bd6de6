"""The quality options: the importance-weighted objective, free bits, schedules, EMA, the resnet model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_SYNTHETIC, only_run_dir, run_vae
from vae_cli.checkpoint import load_checkpoint
from vae_cli.config import LossConfig, ModelConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.objectives import Terms, elbo_terms, iwae_terms


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    lik = create_likelihood(LossConfig(name="bernoulli"))
    return create_model(ModelConfig(name="mlp", hidden_dims=[16]), (1, 4, 4), 3, lik)


def test_iwae_at_k1_is_the_elbo_with_a_sampled_kl() -> None:
    model, x = tiny_model(), torch.randint(0, 2, (5, 1, 4, 4)).float()
    out = model(x, torch.Generator().manual_seed(3))
    terms = iwae_terms(model, x, k=1, generator=torch.Generator().manual_seed(3))
    log_px_z = model.likelihood.log_prob(out.params, x)
    std = torch.exp(0.5 * out.logvar)
    q = torch.distributions.Normal(out.mu, std).log_prob(out.z).sum(1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(out.z).sum(1)
    torch.testing.assert_close(terms.bound, log_px_z + p - q)
    torch.testing.assert_close(terms.loss(beta=1.0), -(log_px_z + p - q).mean())
    # ... and in expectation equals the ELBO with the closed-form KL.
    xs = x.repeat(4000, 1, 1, 1)
    iwae1 = iwae_terms(model, xs, k=1).bound.mean()
    elbo = -elbo_terms(model, xs).loss(1.0)
    assert abs(iwae1 - elbo) < 0.05


def test_iwae_tightens_with_k() -> None:
    model, x = tiny_model(1), torch.randint(0, 2, (400, 1, 4, 4)).float()
    bounds = [iwae_terms(model, x, k=k).bound.mean().item() for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2]


def test_free_bits_floor_each_dimension_in_the_loss() -> None:
    recon = torch.tensor([10.0, 12.0])
    kl_per_dim = torch.tensor([[0.01, 2.0, 0.3], [0.03, 1.0, 0.5]])  # batch means 0.02, 1.5, 0.4
    terms = Terms(recon, kl_per_dim.sum(1), kl_per_dim)
    assert terms.loss(1.0) == pytest.approx(11.0 + 1.92)
    assert terms.loss(1.0, free_bits=0.5) == pytest.approx(11.0 + 0.5 + 1.5 + 0.5)
    assert terms.loss(2.0, free_bits=0.1) == pytest.approx(11.0 + 2 * (0.1 + 1.5 + 0.4))
    # Below the floor a dimension's KL gets no gradient: the loss never pushes it lower.
    per_dim = kl_per_dim.clone().requires_grad_(True)
    Terms(recon, per_dim.sum(1), per_dim).loss(1.0, free_bits=0.5).backward()
    assert per_dim.grad[:, 0].abs().sum() == 0 and per_dim.grad[:, 2].abs().sum() == 0
    assert per_dim.grad[:, 1].abs().sum() > 0


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
    assert run_vae(["train", *options, "train.epochs=2"], straight).returncode == 0
    assert run_vae(["train", *options, "train.epochs=1"], first).returncode == 0
    last = only_run_dir(first) / "checkpoints" / "last.ckpt"
    result = run_vae(["train", *options, "train.epochs=2", f"train.resume={last}"], resumed)
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


def test_cosine_anneals_to_min_lr_over_the_run_even_when_extended(tmp_path: Path) -> None:
    options = [
        *(o for o in TINY_SYNTHETIC if not o.startswith("model.")),  # conv's keys
        "model=mlp",
        "train.image_every=0",
        "train.scheduler=cosine",
        "train.min_lr=1e-5",
    ]
    assert run_vae(["train", *options, "train.epochs=1"], tmp_path).returncode == 0
    last = only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5, rel=1e-3)
    extended = tmp_path / "extended"
    extended.mkdir()
    assert run_vae(["train", *options, "train.epochs=2", f"train.resume={last}"], extended).returncode == 0
    ckpt = load_checkpoint(only_run_dir(extended) / "checkpoints" / "last.ckpt")
    assert ckpt["scheduler"]["T_max"] == ckpt["step"]  # the schedule spans the extended run
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5, rel=1e-3)


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
    result = run_vae(["train", *options], tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["epochs"] < 10 and "early stop" in result.stderr
