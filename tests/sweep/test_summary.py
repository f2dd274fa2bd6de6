"""A sweep's summary (vae_cli/sweep/summary.py), rebuilt from its job folders alone."""

from __future__ import annotations

import json
from pathlib import Path

from vae_cli.sweep.summary import collect, read_summary, write_summary


def _fake_job(sweep: Path, num: int, beta: float, metrics: dict | None, status: dict | None = None) -> Path:
    job = sweep / f"{num}_beta={beta}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- beta={beta}\n- latent_dim=8\n")
    (job / ".hydra" / "config.yaml").write_text(f"beta: {beta}\nlatent_dim: 8\n")
    (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (job / "job.json").write_text(json.dumps(status))
    return job


def test_the_summary_of_an_unfinished_sweep_is_rebuilt_from_its_folders(tmp_path: Path) -> None:
    done = {"val": {"loss": 90.0}, "test": {"loss": 91.0, "recon": 80.0, "kl": 11.0, "active_units": 5}}
    _fake_job(tmp_path, 0, 1.0, done)
    _fake_job(tmp_path, 1, 4.0, None)  # still running (or killed): no metrics.json yet
    _fake_job(tmp_path, 2, 8.0, None, {"status": "failed", "error": "boom"})
    rows = collect(tmp_path)
    assert [(r["job"], r["beta"], r["status"], r["error"]) for r in rows] == [
        (0, 1.0, "done", ""),
        (1, 4.0, "unfinished", ""),
        (2, 8.0, "failed", "boom"),
    ]
    path = write_summary(tmp_path)
    back = read_summary(path)
    assert back[0]["test_loss"] == 91.0 and back[0]["active_units"] == 5 and back[1]["test_loss"] == ""
    assert not list(tmp_path.glob(".summary.*.tmp"))  # written through a temporary file, then renamed


def test_mig_and_dci_get_a_column_each_when_the_data_has_factors(tmp_path: Path) -> None:
    from vae_cli.sweep.summary import summary_table

    test = {"loss": 91.0, "recon": 80.0, "kl": 11.0, "mig": 0.125, "dci_disentanglement": 0.375}
    _fake_job(tmp_path, 0, 1.0, {"val": {"loss": 90.0}, "test": test})
    (row,) = collect(tmp_path)
    assert (row["mig"], row["dci"]) == (0.125, 0.375)
    columns = {c.header: list(c.cells) for c in summary_table([row], "sweep").columns}
    assert columns["MIG"] == ["0.125"] and columns["DCI"] == ["0.375"]
