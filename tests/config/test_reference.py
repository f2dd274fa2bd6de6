"""The key reference (vae_cli/config/reference.py): docs/configuration.md and `vae <command> --help`,
generated from the schemas."""

from __future__ import annotations


def test_the_configuration_reference_is_generated_from_the_schemas() -> None:
    from vae_cli.config.reference import DOCS, markdown_reference

    assert DOCS.read_text() == markdown_reference(), "docs/configuration.md is stale: run `make docs`"


def test_help_shows_the_keys_of_the_config_a_command_line_runs_with() -> None:
    from vae_cli.config.reference import command_help

    text = command_help("train", ["model=mlp", "latent_dim=7", "-m", "beta=1,4"])
    keys = {
        line.split()[0]: line.split()[1]
        for line in text.splitlines()
        if line.startswith("  ") and "." in line
    }
    assert keys["model.hidden_dims"] == "null" and "model.channels" not in keys  # null: automatic
    assert "train.lr" in keys and "dataset.size" in keys
    assert any(line.split()[:2] == ["latent_dim", "7"] for line in text.splitlines())
    assert "*mlp" in text and "*synthetic" in text and "beta=1,4" in text  # a sweep is named, not applied
    sample = command_help("sample", [])
    sample_keys = [line.split()[0] for line in sample.splitlines() if line.startswith("  ")]
    assert "temperature" in sample_keys and "latent_dim" not in sample_keys
    assert not any(k.startswith(("train.", "dataset.", "model.", "loss.")) for k in sample_keys)


def test_vae_train_help_prints_the_keys_without_importing_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from vae_cli.cli import main; main(['train', 'model=mlp', '--help']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model.hidden_dims" in result.stdout and "usage: vae train" in result.stdout
