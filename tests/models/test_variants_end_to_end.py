"""Every prior and posterior through the CLI, in this process: one tiny epoch of `vae train`, then
`vae sample`, `vae evaluate` and `vae reconstruct` on its checkpoint, and `load_model`; an exact resume
of a non-default pair; impossible values refused with one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import fork_vae, ok, one_error, only_run_dir, vae, vae_all
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.checkpoint import load_checkpoint

# posterior=categorical with prior=uniform is not among them: the checks below are those of Gaussian codes
# (the encoder's Gaussian KL per dimension, N(0, 1) traversals); tests/models/test_categorical.py runs
# the same commands for it with the checks of one-hot codes
VARIANTS = {
    "mog": ["prior=mog", "prior.components=3"],
    "vamp": ["prior=vamp", "prior.pseudo_inputs=6"],
    "iaf": ["posterior=iaf", "posterior.steps=2", "posterior.hidden=16"],
    "vamp_iaf_iwae": [
        "prior=vamp",
        "prior.pseudo_inputs=6",
        "posterior=iaf",
        "objective=iwae",
        "objective.k=3",
    ],
    "vamp_autoregressive": [
        "prior=vamp",
        "prior.pseudo_inputs=6",
        "loss=bernoulli",
        "loss.autoregressive=true",
    ],
    "ladder_vamp_iaf": [  # (the dense form is trained in tests/models/test_ladder.py)
        "model=ladder",
        "model.form=conv",
        "model.layers=[3]",
        "model.hidden_dims=[16,8]",
        "prior=vamp",
        "prior.pseudo_inputs=6",
        "posterior=iaf",
        "posterior.hidden=16",
    ],
}


def _options(name: str) -> list[str]:
    """The tiny run's options with the variant's; a variant that names a model replaces the conv."""
    base = [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=1"]
    if any(o.startswith("model=") for o in VARIANTS[name]):
        base = [o for o in base if o != "model=conv"]
    return [*base, *VARIANTS[name]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    runs = vae_all({name: ["train", *_options(name)] for name in VARIANTS}, root)
    for name in VARIANTS:
        ok(runs, name)
    return {name: only_run_dir(root / name) for name in VARIANTS}


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_trains_samples_evaluates_and_reconstructs(trained, name: str, tmp_path: Path) -> None:
    run = trained[name]
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(math.isfinite(metrics["test"][k]) for k in ("loss", "recon", "kl"))
    assert list((run / "tensorboard").iterdir())  # the epoch's scalars and prior samples
    commands = {
        "sample": ["sample", f"ckpt={run}", "n=8", f"out={tmp_path}/samples.png"],
        "traverse": ["sample", f"ckpt={run}", "mode=traverse", "steps=3", f"out={tmp_path}/t"],
        "evaluate": ["evaluate", f"ckpt={run}", "iwae_k=16", f"out={tmp_path}/e"],
        "reconstruct": ["reconstruct", f"ckpt={run}", "n=4", f"out={tmp_path}/r.png"],
    }
    runs = vae_all(commands, tmp_path / "runs")
    for command in commands:
        ok(runs, command)
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "r.png").is_file()
    traverse = json.loads((tmp_path / "t" / "traverse.json").read_text())
    assert "KL(q0(z_j|x) || N(0, 1))" in traverse["kl_means"]  # says what its KL per dimension is
    m = json.loads((tmp_path / "e" / "metrics_test.json").read_text())
    assert (m["prior"], m["posterior"]) == (
        "vamp" if "vamp" in name else "mog" if name == "mog" else "standard",
        "iaf" if "iaf" in name else "gaussian",
    )
    assert math.isfinite(m["iwae_nll"]) and m["iwae_nll"] <= m["neg_elbo"] + 1e-6
    assert m["neg_elbo"] == pytest.approx(m["recon"] + m["kl"])  # kl estimated on the same draws
    assert "does not sum to kl" in m["kl_per_dim_means"]
    assert len(m["kl_per_dim"]) == m["latent_dim"] == (4 + 3 if "ladder" in name else 4)


def test_load_model_rebuilds_the_variant_and_samples_from_its_prior(trained) -> None:
    from vae_cli import load_model

    model = load_model(trained["vamp_iaf_iwae"], "cpu")
    assert type(model.prior).__name__ == "VampPrior" and type(model.posterior).__name__ == "IafPosterior"
    generator = torch.Generator().manual_seed(0)
    z = model.prior_codes(4000, generator=generator)
    mean, logvar = model.prior.components()
    torch.testing.assert_close(z.mean(0), mean.mean(0), atol=0.1, rtol=0.1)  # the mixture's, not N(0, I)'s
    assert model.sample(3, generator=generator).shape == (3, 1, 16, 16)


def test_load_model_rebuilds_a_ladder_with_its_top_prior_and_posterior(trained) -> None:
    from vae_cli import load_model

    model = load_model(trained["ladder_vamp_iaf"], "cpu")
    assert (type(model.prior).__name__, type(model.prior.top).__name__) == ("LadderPrior", "VampPrior")
    assert type(model.posterior.top).__name__ == "IafPosterior" and model.latent_dim == 7
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 16, 16)


def test_a_variant_resumes_exactly(tmp_path: Path) -> None:
    options = [*TINY_SYNTHETIC, "train.image_every=0", *VARIANTS["mog"], *VARIANTS["iaf"]]
    for name in ("straight", "first", "resumed"):
        (tmp_path / name).mkdir()
    assert vae(["train", *options, "train.epochs=2"], tmp_path / "straight").returncode == 0
    assert vae(["train", *options, "train.epochs=1"], tmp_path / "first").returncode == 0
    last = only_run_dir(tmp_path / "first") / "checkpoints" / "last.ckpt"
    result = vae(["train", *options, "train.epochs=2", f"train.resume={last}"], tmp_path / "resumed")
    assert result.returncode == 0, result.stderr
    a = load_checkpoint(only_run_dir(tmp_path / "straight") / "checkpoints" / "last.ckpt")["model"]
    b = load_checkpoint(only_run_dir(tmp_path / "resumed") / "checkpoints" / "last.ckpt")["model"]
    assert any(k.startswith("prior.") for k in a) and any(k.startswith("posterior.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    # resuming with another prior (more components) is refused: it defines the model
    other = fork_vae(
        ["train", *options, "prior.components=4", "train.epochs=2", f"train.resume={last}"], tmp_path
    )
    assert "different prior" in one_error(other.returncode, other.stderr)


@pytest.mark.parametrize(
    "override",
    ["prior=mog prior.components=0", "prior=vamp prior.pseudo_inputs=0", "posterior=iaf posterior.steps=0"],
)
def test_impossible_values_stop_with_one_line(override: str, tmp_path: Path) -> None:
    result = fork_vae(["train", *TINY_SYNTHETIC, *override.split()], tmp_path)
    key = override.split()[1].split("=")[0]
    assert f"{key}=0 is invalid: must be at least 1" in one_error(result.returncode, result.stderr)


def test_a_one_layer_ladder_stops_with_one_line(tmp_path: Path) -> None:
    options = [o for o in TINY_SYNTHETIC if o != "model=conv"]
    result = fork_vae(["train", *options, "model=ladder", "model.layers=[]"], tmp_path)
    message = one_error(result.returncode, result.stderr)
    assert "model.layers=[] is invalid" in message and "two or more stochastic layers" in message
