"""`vae sample sampler=gmm` (vae_cli/code_mixture.py): codes drawn from a Gaussian mixture fitted to the
training split's posterior means, fitted once and kept in the run folder as code_mixture-<components>.pt.

One tiny MLP is trained once for the module, in this process; the commands run in this process too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.cli import ok, one_error, only_run_dir, vae
from tests.helpers.data import grid_size, png_size
from vae_cli import code_mixture
from vae_cli.code_mixture import CodeMixture

DATA = [
    "dataset=synthetic",
    "dataset.size=300",
    "dataset.val_size=50",
    "dataset.test_size=50",
    "dataset.image_size=16",
    "model=mlp",
    "model.hidden_dims=[32]",
    "latent_dim=2",
    "train.batch_size=32",
    "train.image_every=0",
]
SIZE = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gmm")
    trained = vae(["train", *DATA, "train.epochs=1", "hydra.run.dir=run"], root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root / "run"


def sample(run: Path, cwd: Path, *args: str) -> tuple[torch.Tensor, Path, str]:
    """`vae sample ckpt=<run> sampler=gmm save_tensor=true <args>` in cwd: its images, folder and stderr."""
    cwd.mkdir(parents=True, exist_ok=True)
    result = vae(["sample", f"ckpt={run}", "sampler=gmm", "save_tensor=true", *args], cwd)
    ok({"r": result}, "r")
    folder = only_run_dir(cwd, "sample")
    return torch.load(folder / "samples.pt", weights_only=True), folder, " ".join(result.stderr.split())


def kept(run: Path, components: int) -> CodeMixture:
    path = run / f"code_mixture-{components}.pt"
    return CodeMixture.from_payload(torch.load(path, weights_only=True))


class Counting:
    """fit_code_mixture, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.fit = code_mixture.fit_code_mixture

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fit(*args, **kwargs)


def test_gmm_writes_the_grid_keeps_the_mixture_and_decodes_its_codes(run, tmp_path: Path) -> None:
    from vae_cli.api import read_checkpoint

    images, folder, err = sample(run, tmp_path / "a", "components=3", "n=12", "nrow=4", "seed=5")
    assert images.shape == (12, 1, SIZE, SIZE) and png_size(folder / "samples.png") == grid_size(
        rows=3, cols=4, size=SIZE, scale=4
    )
    assert "fitted 3 Gaussians to 200 training codes, kept in" in err
    trained = read_checkpoint(run)
    mixture = kept(run, 3)
    assert (mixture.components, mixture.checkpoint, mixture.step, mixture.codes) == (
        3,
        trained.path.name,
        trained.step,
        200,
    )
    assert mixture.weights.shape == (3,) and mixture.means.shape == (3, 2)
    assert mixture.covariances.shape == (3, 2, 2)
    # the images are the decoded codes of a direct computation from the stored tensors, same generator
    generator = trained.generator(5)
    k = torch.multinomial(mixture.weights.float(), 12, replacement=True, generator=generator)
    eps = torch.randn((12, 2), generator=generator)
    chol = torch.linalg.cholesky(mixture.covariances).float()
    z = mixture.means.float()[k] + (chol[k] @ eps[:, :, None])[:, :, 0]
    with torch.no_grad():
        expected = trained.model.likelihood.mean(trained.model.decode(z))
    torch.testing.assert_close(images, expected)


def test_the_mixtures_draws_have_its_mean_and_covariance() -> None:
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(3, 2, 2)))
    mixture = CodeMixture(
        torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
        torch.tensor([[-2.0, 0.0], [1.0, 2.0], [0.5, -1.0]], dtype=torch.float64),
        a @ a.transpose(1, 2) + 0.1 * torch.eye(2, dtype=torch.float64),
        3,
        0,
        "best.ckpt",
        1,
        100,
    )
    w, m, s = mixture.weights, mixture.means, mixture.covariances
    mean = (w[:, None] * m).sum(0)
    for temperature in (1.0, 0.5):
        z = mixture.sample(200_000, torch.Generator().manual_seed(1), temperature).double()
        second = (w[:, None, None] * (temperature**2 * s + m[:, :, None] * m[:, None, :])).sum(0)
        covariance = second - mean[:, None] * mean[None, :]
        torch.testing.assert_close(z.mean(0), mean, atol=0.03, rtol=0)
        torch.testing.assert_close(torch.cov(z.T), covariance, atol=0.05, rtol=0.03)
    again = mixture.sample(10, torch.Generator().manual_seed(7))
    torch.testing.assert_close(again, mixture.sample(10, torch.Generator().manual_seed(7)), rtol=0, atol=0)


def test_a_second_call_reuses_the_kept_mixture_and_is_reproducible(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, _ = sample(run, tmp_path / "a", "components=4", "n=16", "seed=2")
    before = (run / "code_mixture-4.pt").stat().st_mtime_ns
    counting = Counting()
    monkeypatch.setattr(code_mixture, "fit_code_mixture", counting)
    again, _, err = sample(run, tmp_path / "b", "components=4", "n=16", "seed=2")
    other, _, _ = sample(run, tmp_path / "c", "components=4", "n=16", "seed=3")
    assert counting.calls == 0 and "the mixture kept in" in err
    assert (run / "code_mixture-4.pt").stat().st_mtime_ns == before
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # seeded: the same images
    assert not torch.equal(first, other)


def test_a_run_trained_further_refits(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    sample(copy, tmp_path / "a", "components=2", "n=4")
    step = kept(copy, 2).step
    resumed = vae(
        [
            "train",
            *DATA,
            "train.epochs=2",
            f"train.resume={copy}/checkpoints/last.ckpt",
            f"hydra.run.dir={copy}",
        ],
        tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counting = Counting()
    monkeypatch.setattr(code_mixture, "fit_code_mixture", counting)
    _, _, err = sample(copy, tmp_path / "b", "components=2", "n=4")
    assert counting.calls == 1 and "refitting" in err and f"fitted at step {step}" in err
    assert kept(copy, 2).step > step


def test_a_lone_checkpoint_or_a_read_only_run_fits_in_memory(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lone = tmp_path / "lone.ckpt"
    shutil.copy(run / "checkpoints" / "best.ckpt", lone)
    _, _, err = sample(lone, tmp_path / "a", "components=2", "n=4")
    assert "is not in a run folder: the mixture is fitted in memory, not kept" in err
    assert not list(tmp_path.glob("code_mixture-*.pt"))

    def refuse(path, write):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(code_mixture, "write_atomically", refuse)
    _, _, err = sample(run, tmp_path / "b", "components=5", "n=4")
    assert "the mixture is fitted in memory, not kept" in err and "Permission denied" in err
    assert not (run / "code_mixture-5.pt").exists()


def test_modes_that_draw_no_prior_codes_say_the_sampler_is_not_used(run, tmp_path: Path) -> None:
    result = vae(["sample", f"ckpt={run}", "sampler=gmm", "mode=interpolate", "pairs=2", "steps=3"], tmp_path)
    ok({"r": result}, "r")
    assert "mode=interpolate draws no codes from the prior; the sampler is not used" in " ".join(
        result.stderr.split()
    )


def test_what_cannot_apply_is_one_line(run, tmp_path: Path) -> None:
    result = vae(["sample", f"ckpt={run}", "sampler=gmm", "components=1000"], tmp_path)
    line = one_error(result.returncode, result.stderr)
    assert "sampler=gmm fits 1000 Gaussians to the training codes" in line and "set components=" in line
    result = vae(["sample", f"ckpt={run}", "sampler=nope"], tmp_path)
    assert "sampler=nope is invalid: choose one of prior, gmm" in one_error(result.returncode, result.stderr)
    # a model of a table whose file has gone
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    (data / "table.csv").write_text(
        "a,b\n" + "\n".join(f"{x:.4f},{y:.4f}" for x, y in rng.normal(size=(40, 2)))
    )
    args = [
        "dataset=tensor",
        "dataset.path=table.csv",
        f"data_dir={data}",
        "model=mlp",
        "model.hidden_dims=[8]",
    ]
    trained = vae(["train", *args, "loss=gaussian", "train.epochs=1", "hydra.run.dir=table"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (tmp_path / "empty").mkdir()
    result = vae(
        ["sample", f"ckpt={tmp_path / 'table'}", "sampler=gmm", f"data_dir={tmp_path / 'empty'}"], tmp_path
    )
    line = one_error(result.returncode, result.stderr)
    assert "sampler=gmm needs the training data" in line and "data_dir=" in line
    assert not (tmp_path / "table" / "code_mixture-10.pt").exists()
