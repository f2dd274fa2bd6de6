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
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vae_cli.config import register_configs
from vae_cli.errors import exit_on_user_error
from vae_cli.sweep.guard import guard_sweep

log = logging.getLogger("vae")


def config_dir() -> Path:
    """The configs shipped inside the wheel, else the checkout's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The resolved config `vae <config_name> <overrides>` would run with, composed without the CLI
    (for benchmarks, tests and notebooks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.resolve(cfg)
    return cfg


def run_task(fn: Callable[[DictConfig, Path], Any], cfg: DictConfig) -> Any:
    """Resolve the config to plain values and run; a user error is one line and its exit code (in a
    sweep's job, the sweep records it)."""

    def task() -> Any:
        OmegaConf.resolve(cfg)
        return fn(cfg, Path(HydraConfig.get().runtime.output_dir))

    return exit_on_user_error(task, in_sweep=HydraConfig.get().mode == RunMode.MULTIRUN)


def train_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.train import train

    return run_task(train, cfg)  # optuna gets the validation loss, others the metrics


def sample_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.sample import sample

    return run_task(sample, cfg)


def reconstruct_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.reconstruct import reconstruct

    return run_task(reconstruct, cfg)


def evaluate_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.evaluate import evaluate

    return run_task(evaluate, cfg)


def score_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.score import score

    return run_task(score, cfg)


#: subcommand -> (one-line help, primary config name, task function)
SUBCOMMANDS: dict[str, tuple[str, str, Callable[[DictConfig], Any]]] = {
    "train": ("train a VAE (checkpoints, TensorBoard, metrics.json)", "train", train_task),
    "sample": ("prior samples, traversals or interpolations from a checkpoint", "sample", sample_task),
    "reconstruct": ("originals above reconstructions, of a split or images", "reconstruct", reconstruct_task),
    "evaluate": ("-ELBO, IWAE -log p(x), bits/dim, active units, probe accuracy", "evaluate", evaluate_task),
    "score": ("per-example anomaly scores (CSV, grid, ROC AUC) of a split/folder/file", "score", score_task),
}


def report_command(argv: list[str]) -> None:
    from vae_cli.commands.report import main as report_main

    report_main(argv)


#: subcommands that take plain arguments, not Hydra overrides: subcommand -> (one-line help, function)
PLAIN_SUBCOMMANDS: dict[str, tuple[str, Callable[[list[str]], Any]]] = {
    "report": ("table and plots of a sweep folder (vae train -m ...)", report_command),
}


def usage() -> str:
    lines = ["usage: vae <command> [hydra overrides] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (help_, _, _) in SUBCOMMANDS.items()]
    lines += [f"  {name:<12} {help_}" for name, (help_, _) in PLAIN_SUBCOMMANDS.items()]
    lines += [
        "",
        "examples:",
        "  vae train model=conv dataset=mnist",
        "  vae train -m beta=0.5,1,4 latent_dim=8,16",
        "  vae report outputs/train/multirun/<date>/<time>",
        "  vae sample ckpt=outputs/train/<date>/<time> mode=traverse",
        "  vae evaluate ckpt=outputs/train/<date>/<time> iwae_k=1000",
        "  vae score ckpt=outputs/train/<date>/<time> input=test anomaly_class=9",
        "  vae train --help        (every config group and key)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command in PLAIN_SUBCOMMANDS:
        PLAIN_SUBCOMMANDS[command][1](rest)
        return
    if command not in SUBCOMMANDS:
        print(
            f"error: unknown command '{command}': choose one of "
            f"{', '.join([*SUBCOMMANDS, *PLAIN_SUBCOMMANDS])} (see vae --help)",
            file=sys.stderr,
        )
        sys.exit(2)
    _, config_name, task = SUBCOMMANDS[command]
    if "--help" in rest or "-h" in rest:  # every key with its value and meaning, from the schemas
        from vae_cli.config.reference import print_help

        exit_on_user_error(lambda: print_help(command, [a for a in rest if a not in ("--help", "-h")]))
        return
    register_configs()
    # Hydra prints composition errors (bad overrides, unknown choices) over several lines with exit
    # code 1; ours are one line with exit code 2, like every other user error.
    # A sweep stopped by a failed job or Ctrl-C still writes its summary.csv first (vae_cli/sweep/guard.py).
    hydra_utils.run_and_report = lambda func: exit_on_user_error(guard_sweep(func))
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun every process runs Hydra; only rank 0 gets a run folder and a log file.
        rest = [
            *rest,
            "hydra.output_subdir=null",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
            f"hydra.run.dir={os.getcwd()}",
        ]
    sys.argv = [f"vae {command}", *rest]
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)()


if __name__ == "__main__":
    main()
