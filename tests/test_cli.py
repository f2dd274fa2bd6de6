"""The `vae` entrypoint (vae_cli/cli.py): the subcommands, and Hydra's own flags after them. Run in this
process; the unknown subcommand in a forked child, for its exit code and stderr."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import fork_vae, vae


def test_help_lists_subcommands(tmp_path: Path) -> None:
    result = vae(["--help"], tmp_path)
    assert result.returncode == 0 and "train" in result.stdout


def test_unknown_subcommand_is_one_line(tmp_path: Path) -> None:
    result = fork_vae(["trian"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown command 'trian': choose one of " + result.stderr.split("choose one of ")[1].strip()
    ]
    assert "train" in result.stderr


def test_cfg_job_prints_the_config_without_training(tmp_path: Path) -> None:
    result = vae(["train", "latent_dim=7", "--cfg", "job"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "latent_dim: 7" in result.stdout
    assert not (tmp_path / "outputs").exists()
