"""`vae train` as a command (vae_cli/commands/train.py): what a job hands its sweeper."""

from __future__ import annotations

from vae_cli.commands.train import sweep_objective


def test_outside_an_optuna_sweep_the_task_returns_its_metrics() -> None:
    metrics = {"val": {"loss": 1.5}}
    assert sweep_objective(metrics) is metrics
