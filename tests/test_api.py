"""The public Python API (vae_cli/__init__.py, vae_cli/api.py): a model from a checkpoint alone, and an
`import vae_cli` that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers.cli import cli_env
from tests.helpers.data import LATENT, SIZE


def test_python_api(trained_run: Path) -> None:
    from vae_cli import load_model

    model = load_model(trained_run, device="cpu")
    assert model.config.latent_dim == LATENT and model.config.dataset.name == "synthetic"
    x = torch.rand(3, 1, SIZE, SIZE)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, LATENT)
    assert model.decode(mu).shape == (3, 1, SIZE, SIZE)  # Bernoulli logits
    assert model.sample(5).shape == (5, 1, SIZE, SIZE)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    assert not model.training


def test_import_vae_cli_stays_light() -> None:
    """load_model is imported on first use: importing the package alone does not load torch."""
    code = "import sys, vae_cli; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
