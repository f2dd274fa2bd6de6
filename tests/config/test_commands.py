"""The checkpoint commands' primary configs (vae_cli/config/commands.py): they compose, validate, refuse
typos, and honour out=."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("command", ["sample", "reconstruct", "evaluate"])
def test_primary_configs_compose_validate_and_honour_out(command: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from vae_cli import config
    from vae_cli.cli import config_dir

    config.register_configs()
    validate = getattr(config, f"validate_{command}_config")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(command, overrides=["ckpt=run"], return_hydra_config=True)
            validate(cfg)
            assert cfg.hydra.job.name == command and cfg.hydra.run.dir.startswith(f"outputs/{command}/")
            cfg = compose(command, overrides=["ckpt=run", f"out={tmp_path}"], return_hydra_config=True)
            assert cfg.hydra.run.dir == str(tmp_path)  # out= is the whole run folder
            with pytest.raises(ConfigCompositionException):
                compose(command, overrides=["ckpt=run", "sed=1"])  # a typo is an error, not a new key
    finally:
        GlobalHydra.instance().clear()


def test_score_config_composes_validates_and_honours_out(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from vae_cli import config
    from vae_cli.cli import config_dir

    config.register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("score", overrides=["ckpt=run"], return_hydra_config=True)
            config.validate_score_config(cfg)
            assert cfg.input == "test" and cfg.iwae_k == 0 and cfg.hydra.job.name == "score"
            cfg = compose("score", overrides=["ckpt=run", f"out={tmp_path}", "anomaly_class=[7,9]"])
            config.validate_score_config(cfg)
            with pytest.raises(ConfigCompositionException):
                compose("score", overrides=["ckpt=run", "iwae=5"])  # a typo is an error, not a new key
    finally:
        GlobalHydra.instance().clear()
