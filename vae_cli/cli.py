"""The `vae` entrypoint: picks the subcommand, then hands the rest of argv to Hydra.

`vae train beta=4 -m latent_dim=8,16` runs Hydra's `train` config with `beta=4 -m latent_dim=8,16`, so
every Hydra feature (overrides, --multirun, --cfg job, --help, shell completion) works after the
subcommand.

Before Hydra runs (and before torch is imported), the command line is checked (vae_cli/command_line.py):
a bad one is one line in about half a second and leaves nothing behind.
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

from vae_cli import paths
from vae_cli.command_line import check_added_keys, check_command_line, explained, flags_first
from vae_cli.config import register_configs
from vae_cli.config.compose import compose_config, config_dir  # noqa: F401  (also the public helpers)
from vae_cli.errors import exit_on_user_error, is_user_error, out_of_memory
from vae_cli.sweep.guard import guard_sweep

log = logging.getLogger("vae")


def run_task(fn: Callable[[DictConfig, Path], Any], cfg: DictConfig, command: str = "") -> Any:
    """Resolve the config to plain values and run; a user error is one line and its exit code (in a
    sweep's job, the sweep records it). Running out of memory is one line naming the settings to lower.
    A run folder this process made, that the failed run left holding only .hydra/ and its log, is removed."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN

    def task() -> Any:
        try:
            OmegaConf.resolve(cfg)
            check_added_keys(cfg, list(hydra_cfg.overrides.task), command or hydra_cfg.job.name)
            return fn(cfg, run_dir)
        except BaseException as e:
            better = out_of_memory(e, command, cfg)
            if not in_sweep and (better is not None or is_user_error(e)):
                paths.remove_bare_run_dir(run_dir)
            if better is not None:
                raise better from None
            raise

    return exit_on_user_error(task, in_sweep=in_sweep)


def train_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.train import train

    return run_task(train, cfg, "train")  # optuna gets the validation loss, others the metrics


def sample_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.sample import sample

    return run_task(sample, cfg, "sample")


def reconstruct_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.reconstruct import reconstruct

    return run_task(reconstruct, cfg, "reconstruct")


def evaluate_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.evaluate import evaluate

    return run_task(evaluate, cfg, "evaluate")


def embed_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.embed import embed

    return run_task(embed, cfg, "embed")


def score_task(cfg: DictConfig) -> Any:
    from vae_cli.commands.score import score

    return run_task(score, cfg, "score")


#: subcommand -> (one-line help, primary config name, task function)
SUBCOMMANDS: dict[str, tuple[str, str, Callable[[DictConfig], Any]]] = {
    "train": ("train a VAE (checkpoints, TensorBoard, metrics.json)", "train", train_task),
    "sample": ("prior samples, traversals, interpolations, the 2-D manifold", "sample", sample_task),
    "reconstruct": ("originals above reconstructions, of a split or images", "reconstruct", reconstruct_task),
    "evaluate": ("-ELBO, IWAE -log p(x), bits/dim, active units, probe, vs PCA", "evaluate", evaluate_task),
    "embed": ("a split's codes (NPZ, CSV) and their scatter, coloured by label", "embed", embed_task),
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
    lines = [
        "usage: vae <command> [key=value ...] [-m] [--cfg job] [--help]    vae --version",
        "",
        "commands:",
    ]
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
        "  vae embed ckpt=outputs/train/<date>/<time> method=tsne",
        "  vae train --help        (every config group and key)",
    ]
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version, else the checkout's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vae-cli")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib

        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("--version", "-V"):
        print(f"vae {version()}")
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
    rest = paths.quote_path_overrides(rest)  # `dataset.path=~/my photos` reaches the config as that path
    rest = flags_first(rest)
    if "--help" in rest or "-h" in rest:  # every key with its value and meaning, from the schemas
        from vae_cli.config.reference import print_help

        exit_on_user_error(lambda: print_help(command, [a for a in rest if a not in ("--help", "-h")]))
        return
    register_configs()
    rank = int(os.environ.get("RANK", "0"))
    # Check what can be checked without torch first: a bad command line fails in a second and leaves
    # nothing behind (every rank of a torchrun checks; rank 0 alone checks and reserves the run folder).
    checked = rest
    rest = exit_on_user_error(lambda: check_command_line(command, config_name, checked, rank == 0))
    if rank > 0:
        # Under torchrun every process runs Hydra; only rank 0 gets a run folder and a log file.
        rest = [
            *rest,
            "hydra.output_subdir=null",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
            f"hydra.run.dir={paths.hydra_quote(os.getcwd())}",
        ]
    # Hydra prints composition errors (bad overrides, unknown choices) over several lines with exit
    # code 1; ours are one line with exit code 2, like every other user error.
    # A sweep stopped by a failed job or Ctrl-C still writes its summary.csv first (vae_cli/sweep/guard.py).
    hydra_args_ = rest
    hydra_utils.run_and_report = lambda func: exit_on_user_error(
        explained(guard_sweep(func), command, config_name, hydra_args_)
    )
    sys.argv = [f"vae {command}", *rest]
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)()


if __name__ == "__main__":
    main()
