"""`vae sample mode=manifold` (vae_cli/manifold.py, vae_cli/commands/sample.py): the quantile grid against
the normal's inverse CDF (scipy's and torch's), its layout, a mixture prior's estimated quantiles, and the
command end to end on the session's tiny checkpoint (latent_dim 4, so dims=[i,j]); the one-line errors
in real processes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from scipy.stats import norm

from tests.helpers.cli import fork_all, ok, one_error, only_run_dir, vae
from tests.helpers.data import LATENT, SIZE
from vae_cli.errors import ConfigError
from vae_cli.manifold import grid_probabilities, manifold_dims, manifold_grid
from vae_cli.models.priors import MixturePrior, StandardPrior, UniformPrior


def test_the_grid_is_the_normal_quantiles_of_evenly_spaced_probabilities() -> None:
    steps, temperature = 7, 0.5
    p = grid_probabilities(steps)
    torch.testing.assert_close(p, torch.tensor([(k + 0.5) / 7 for k in range(7)], dtype=torch.float64))
    assert p.min() > 0 and p.max() < 1 and torch.allclose(p + p.flip(0), torch.ones(7, dtype=torch.float64))
    grid = manifold_grid(StandardPrior(2), 2, (0, 1), steps, temperature)
    expected = temperature * norm.ppf(p.numpy())
    assert grid.exact
    assert grid.columns.tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert grid.rows.tolist() == pytest.approx(expected[::-1].tolist(), abs=1e-6)  # up is high
    icdf = temperature * torch.distributions.Normal(0.0, 1.0).icdf(p.float())
    torch.testing.assert_close(grid.columns, icdf)


def test_the_codes_sweep_the_two_dimensions_and_hold_the_others() -> None:
    grid = manifold_grid(StandardPrior(4), 4, (3, 1), 3)
    z = grid.codes().view(3, 3, 4)
    torch.testing.assert_close(z[:, :, 3], grid.columns.expand(3, 3))  # columns: z3 rising to the right
    torch.testing.assert_close(z[:, :, 1], grid.rows[:, None].expand(3, 3))  # rows: z1 falling downwards
    assert grid.rows[0] > grid.rows[-1] and grid.columns[0] < grid.columns[-1]
    assert (z[:, :, [0, 2]] == 0).all()  # the standard prior's mean


def test_another_prior_gets_its_marginal_quantiles_estimated_from_seeded_draws() -> None:
    prior = MixturePrior(3, components=1)
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 2.0, 1.0])
    with torch.no_grad():
        prior.means.copy_(mean[None])
        prior.logvars.copy_((2 * std.log())[None])
    generator = torch.Generator().manual_seed(0)
    grid = manifold_grid(prior, 3, (1, 0), 5, generator=generator)
    p = grid_probabilities(5).numpy()
    assert not grid.exact
    # one Gaussian component: the quantiles are mean + std * Phi^-1(p), up to the draws' noise
    assert grid.columns.tolist() == pytest.approx((-2.0 + 2.0 * norm.ppf(p)).tolist(), abs=0.08)
    assert grid.rows.tolist() == pytest.approx((1.0 + 0.5 * norm.ppf(p))[::-1].tolist(), abs=0.03)
    assert grid.base[2].item() == pytest.approx(0.5, abs=0.03)  # the others at the prior's mean
    again = manifold_grid(prior, 3, (1, 0), 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.columns, grid.columns)  # seeded


def test_one_hot_codes_and_bad_dims_are_refused() -> None:
    with pytest.raises(ConfigError, match="one-hot codes"):
        manifold_grid(UniformPrior(4, 2), 4, (0, 1), 3)
    assert manifold_dims(0, 2) == (0, 1) and manifold_dims([3, 0], 4) == (3, 0)
    with pytest.raises(ConfigError, match="4-D latent space: choose the two dimensions"):
        manifold_dims(0, 4)
    with pytest.raises(ConfigError, match=r"dims=\[0,4\]: the model has 4 latent dimensions, 0 to 3"):
        manifold_dims([0, 4], 4)
    with pytest.raises(ConfigError, match="latent_dim=1"):
        manifold_dims(0, 1)


def test_manifold_decodes_the_grid_end_to_end(trained_run: Path, tmp_path: Path) -> None:
    from vae_cli.api import load_model

    result = vae(
        ["sample", f"ckpt={trained_run}", "mode=manifold", "dims=[2,0]", "steps=3", "save_tensor=true"],
        tmp_path,
    )
    ok({"r": result}, "r")
    folder = only_run_dir(tmp_path, "sample")
    info = json.loads((folder / "manifold.json").read_text())
    assert info["dims"] == [2, 0] and info["of"] == "the prior" and info["quantiles"].startswith("exact")
    assert info["columns"] == pytest.approx(norm.ppf([1 / 6, 1 / 2, 5 / 6]).tolist(), abs=1e-6)
    images = torch.load(folder / "manifold.pt", weights_only=True)
    assert images.shape == (9, 1, SIZE, SIZE) and (folder / "manifold.png").is_file()
    model = load_model(trained_run, "cpu")
    z = torch.zeros(9, LATENT)
    z[:, 2] = torch.tensor(info["columns"]).repeat(3)
    z[:, 0] = torch.tensor(info["rows"]).repeat_interleave(3)
    with torch.no_grad():
        torch.testing.assert_close(images, model.likelihood.mean(model.decode(z)), rtol=1e-5, atol=1e-6)
    assert not math.isnan(sum(info["other_dims_at"]))


def test_bad_dims_stop_with_one_line(trained_run: Path, tmp_path: Path) -> None:
    base = ["sample", f"ckpt={trained_run}", "mode=manifold"]
    jobs = {
        "out_of_range": ([*base, "dims=[0,7]"], tmp_path / "a"),  # known once the checkpoint is read
        "equal": ([*base, "dims=[1,1]"], tmp_path / "b"),  # before Hydra starts
    }
    results = fork_all(jobs)
    expected = {
        "out_of_range": "dims=[0,7]: the model has 4 latent dimensions, 0 to 3",
        "equal": "dims=[1,1]: mode=manifold sweeps two different latent dimensions",
    }
    for name, text in expected.items():
        assert text in one_error(results[name].returncode, results[name].stderr), name
    # refused before anything was written (the checks before Hydra, or the run folder removed again)
    assert not (tmp_path / "a" / "outputs").exists() and not (tmp_path / "b" / "outputs").exists()


def test_the_sample_config_refuses_bad_dims() -> None:
    from vae_cli.cli import compose_config
    from vae_cli.config import validate_sample_config

    refused = {
        "dims=[0,1,2]: mode=manifold sweeps two different latent dimensions": [
            "mode=manifold",
            "dims=[0,1,2]",
        ],
        "dims=3: mode=manifold sweeps two latent dimensions: name them": ["mode=manifold", "dims=3"],
        "dims=[0,1]: a list of dimensions is for mode=manifold": ["mode=traverse", "dims=[0,1]"],
        "dims=[0, -1] is invalid: must be a count N >= 0": ["mode=manifold", "dims=[0,-1]"],
        "steps=257 is invalid: must be in [2, 256]": ["mode=manifold", "steps=257"],
    }
    for message, overrides in refused.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_sample_config(compose_config(["ckpt=run", *overrides], "sample"))
    validate_sample_config(compose_config(["ckpt=run", "mode=manifold", "dims=[3,1]"], "sample"))
    validate_sample_config(compose_config(["ckpt=run", "mode=traverse", "dims=2"], "sample"))
