"""`vae report`'s plots use the swept numeric keys as x-axes (issue 14, item 5): a train.lr sweep is
plotted against lr (a log axis, it spans 100x), not against the job index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vae_cli.commands.report as report_module
from vae_cli.sweep.summary import collect


def fake_sweep(root: Path, jobs: list[dict]) -> Path:
    """A finished sweep's folders as training leaves them: overrides, config and metrics per job."""
    for num, params in enumerate(jobs):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        overrides = [f"{k}={v}" for k, v in params.items()]
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        beta, latent_dim = params.get("beta", 1.0), params.get("latent_dim", 4)
        (job / ".hydra" / "config.yaml").write_text(f"beta: {beta}\nlatent_dim: {latent_dim}\n")
        loss = 100.0 + num
        metrics = {
            "test": {"loss": loss, "recon": loss - 10, "kl": 10.0, "neg_elbo": loss, "active_units": 3}
        }
        (job / "metrics.json").write_text(json.dumps({**metrics, "best_epoch": 1, "epochs": 1}))
    return root


def spy_axes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = report_module.draw_against

    def spy(rows, x, group, panels, path):  # noqa: ANN001, ANN202
        calls.append((x, group))
        return real(rows, x, group, panels, path)

    monkeypatch.setattr(report_module, "draw_against", spy)
    return calls


def test_an_lr_sweep_is_plotted_against_lr_on_a_log_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = fake_sweep(tmp_path / "sweep", [{"train.lr": lr} for lr in ("1e-4", "1e-3", "1e-2")])
    rows = collect(sweep)
    assert report_module.swept_axes(rows) == ["train.lr"]
    assert report_module.log_axis("train.lr", [1e-4, 1e-3, 1e-2])  # spans 100x
    calls = spy_axes(monkeypatch)
    (tmp_path / "report").mkdir()
    written = report_module.draw_metric_plots(rows, tmp_path / "report")
    assert calls == [("train.lr", "")]
    assert set(written) == {"by_train_lr"} and written["by_train_lr"].name == "by_train_lr.png"
    assert written["by_train_lr"].read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "report" / "by_job.png").exists()


def test_every_swept_numeric_key_is_an_axis_grouped_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [{"beta": b, "train.lr": lr} for b in (1, 4) for lr in ("0.001", "0.003")]
    rows = collect(fake_sweep(tmp_path / "sweep", jobs))
    calls = spy_axes(monkeypatch)
    (tmp_path / "report").mkdir()
    written = report_module.draw_metric_plots(rows, tmp_path / "report")
    assert calls == [("beta", "train.lr"), ("train.lr", "beta")]
    assert {"by_beta", "by_train_lr"} <= set(written)
    assert not report_module.log_axis("train.lr", [0.001, 0.003])  # 3x: a linear axis


def test_without_a_numeric_swept_key_the_plot_is_against_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = collect(fake_sweep(tmp_path / "sweep", [{"train.optimizer": o} for o in ("adam", "adamw")]))
    assert report_module.swept_axes(rows) == []
    calls = spy_axes(monkeypatch)
    (tmp_path / "report").mkdir()
    assert set(report_module.draw_metric_plots(rows, tmp_path / "report")) == {"by_job"}
    assert calls == [("job", "")]
