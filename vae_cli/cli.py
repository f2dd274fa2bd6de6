"""The `vae` entrypoint: picks the subcommand, then hands the rest of argv to Hydra.

`vae train beta=4 -m latent_dim=8,16` runs Hydra's `train` config with `beta=4 -m latent_dim=8,16`, so
every Hydra feature (overrides, --multirun, --cfg job, --help, shell completion) works after the
subcommand.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vae_cli.config import register_configs
from vae_cli.errors import VaeError

log = logging.getLogger("vae")


def config_dir() -> Path:
    """The configs shipped inside the wheel, else the checkout's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


def run_task(fn: Callable[[DictConfig, Path], Any], cfg: DictConfig) -> Any:
    """Resolve the config to plain values, run, and turn user errors into one line and exit code 2."""
    try:
        OmegaConf.resolve(cfg)
        return fn(cfg, Path(HydraConfig.get().runtime.output_dir))
    except VaeError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("error: %s", e)
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def train_task(cfg: DictConfig) -> Any:
    from vae_cli.train import train

    return run_task(train, cfg)


#: subcommand -> (one-line help, primary config name, task function)
SUBCOMMANDS: dict[str, tuple[str, str, Callable[[DictConfig], Any]]] = {
    "train": ("train a VAE (checkpoints, TensorBoard, metrics.json)", "train", train_task),
}


def usage() -> str:
    lines = ["usage: vae <command> [hydra overrides] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (help_, _, _) in SUBCOMMANDS.items()]
    lines += [
        "",
        "examples:",
        "  vae train model=conv dataset=mnist",
        "  vae train -m beta=0.5,1,4 latent_dim=8,16",
        "  vae train --help        (every config group and key)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(
            f"error: unknown command '{command}': choose one of {', '.join(SUBCOMMANDS)} (see vae --help)",
            file=sys.stderr,
        )
        sys.exit(2)
    _, config_name, task = SUBCOMMANDS[command]
    register_configs()
    sys.argv = [f"vae {command}", *rest]
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)()


if __name__ == "__main__":
    main()
