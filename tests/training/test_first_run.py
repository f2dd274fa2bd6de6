"""The first run and honest precision (issue 14): a default `vae train` small enough for a first result
in about a minute with the 64x64 recipe one override away (item 6), progress lines with an ETA where no
bar is drawn (item 6), a Ctrl-C that says it was interrupted and how to resume, in train.log too
(item 7), and a warning for bf16 on a CPU that only emulates it (item 8)."""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from rich.console import Console

import vae_cli.console as console_module
import vae_cli.training.runtime as runtime
from tests.conftest import REPO, TINY_SYNTHETIC
from vae_cli.cli import compose_config
from vae_cli.config.auto import IMAGE_EPOCHS
from vae_cli.console import StepLog, duration
from vae_cli.errors import Interrupted
from vae_cli.training.loop import train

FAST = [*TINY_SYNTHETIC, "train.image_every=0"]


def work(cfg) -> int:  # noqa: ANN001
    """Pixels seen in training: image size^2 x training images x epochs."""
    ds = cfg.dataset
    epochs = cfg.train.epochs or IMAGE_EPOCHS  # null: automatic, 10 for images
    return ds.image_size**2 * (ds.size - ds.val_size - ds.test_size) * epochs


def test_the_default_run_is_an_eighth_of_the_64x64_recipe_which_is_one_override_away() -> None:
    default, full = compose_config([]), compose_config(["experiment=shapes64"])
    assert (default.dataset.name, default.model.name) == ("synthetic", "auto")  # conv for images
    assert default.dataset.image_size == 32 and default.dataset.size == 6000 and default.train.epochs is None
    assert (full.dataset.image_size, full.dataset.size, full.train.epochs) == (64, 10000, 10)
    assert work(default) * 8 <= work(full)  # measured: 39 s against 5.5 to 15 min on 2 shared cores


def test_step_log_writes_a_line_every_15_seconds_with_the_time_left_in_the_epoch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    lines = StepLog(1, 10, 100, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="vae"):
        for _ in range(99):
            now[0] += 1.0  # a second a step: a long first epoch
            lines.advance()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 6  # at 15, 30, ..., 90 s
    assert messages[0] == "epoch 1/10: 15/100 steps (15%), 15 s so far, about 1 min 25 s left in this epoch"


def test_duration_reads_like_a_person_would_say_it() -> None:
    assert [duration(s) for s in (4.4, 59.6, 61, 3725)] == ["4 s", "1 min 00 s", "1 min 01 s", "1 h 02 min"]


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console as in a log file or a pipe: no progress bar can be drawn."""
    monkeypatch.setattr(type(console_module.console), "is_terminal", property(lambda self: False))


def test_outside_a_terminal_training_logs_progress_lines_and_an_eta_per_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, no_terminal: None
) -> None:
    monkeypatch.setattr(console_module, "STEP_LOG_SECONDS", 0.0)  # a line each step, to see them here
    with caplog.at_level(logging.INFO, logger="vae"):
        train(compose_config([*FAST, "train.epochs=2"]), tmp_path / "run")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("epoch 1/2: 1/5 steps (20%)") and "left in this epoch" in m for m in messages)
    (first,) = [m for m in messages if m.startswith("epoch 1/2  train loss")]
    (last,) = [m for m in messages if m.startswith("epoch 2/2  train loss")]
    assert " eta " in first and first.rstrip().endswith(" s")  # the rest of the run, estimated
    assert " eta " not in last  # nothing left to estimate


def test_ctrl_c_says_interrupted_with_the_resume_command_and_logs_it_to_train_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    epochs = []

    def interrupt_in_the_second_epoch() -> None:
        epochs.append(1)
        if len(epochs) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as the user's Ctrl-C

    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(Interrupted) as raised, caplog.at_level(logging.INFO, logger="vae"):
            train(
                compose_config([*FAST, "train.epochs=3"]),
                tmp_path / "run",
                before_epoch=interrupt_in_the_second_epoch,
            )
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    message = str(raised.value)
    resume = (tmp_path / "run" / "checkpoints" / "last.ckpt").resolve()
    assert message.startswith("interrupted (SIGINT): stopped at epoch 2, step 6; checkpoint written; ")
    assert f"continue with: vae train train.resume={resume}" in message
    assert not message.startswith("error") and raised.value.exit_code == 130
    assert message in log_file.read_text()  # train.log says how to go on
    assert not any(r.getMessage() == message for r in caplog.records)  # the console gets it once, at exit


def test_an_interrupt_exits_130_without_an_error_prefix(capsys: pytest.CaptureFixture) -> None:
    from vae_cli.errors import exit_on_user_error

    def stopped() -> None:
        raise Interrupted("interrupted (SIGINT): stopped at epoch 2, step 7; checkpoint written; ...")

    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(stopped)
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip() == (
        "interrupted (SIGINT): stopped at epoch 2, step 7; checkpoint written; ..."
    )


# --- bf16 on a CPU ----------------------------------------------------------------------------------------


def fake_cpu(monkeypatch: pytest.MonkeyPatch, capability: str, flags: set[str] | None) -> None:
    monkeypatch.setattr(runtime.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(runtime, "_cpuinfo_flags", lambda: flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


def bf16_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vae"):
        runtime.check_precision(torch.device("cpu"), "bf16-mixed")
    return [r.getMessage() for r in caplog.records]


def test_bf16_on_an_avx2_only_cpu_warns_with_the_measured_slowdown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cpu(monkeypatch, "AVX2", {"avx", "avx2", "fma"})
    (warning,) = bf16_warnings(caplog)
    assert "without native bf16" in warning and "torch capability AVX2" in warning
    assert "avx512_bf16 no, amx_bf16 no" in warning
    assert "11x" in warning and "25.1 s against 2.2 s" in warning and "train.precision=32" in warning

    fake_cpu(monkeypatch, "AVX512", {"avx2", "avx512f", "avx512bw"})  # AVX-512 without bf16
    (warning,) = bf16_warnings(caplog)
    assert "1.8x" in warning


def test_bf16_on_a_cpu_with_bf16_instructions_or_unknown_says_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cpu(monkeypatch, "AVX512", {"avx2", "avx512f", "avx512bw", "avx512_bf16"})
    assert bf16_warnings(caplog) == []
    fake_cpu(monkeypatch, "AVX512", {"avx2", "avx512f", "avx512bw", "amx_bf16"})
    assert bf16_warnings(caplog) == []
    fake_cpu(monkeypatch, "AVX512", None)  # no /proc/cpuinfo: nothing is known, nothing said
    assert bf16_warnings(caplog) == []
    # torch's own kernels lowered to AVX2 still leave oneDNN's bf16 matrix products native (measured)
    fake_cpu(monkeypatch, "AVX2", {"avx2", "avx512f", "avx512bw", "avx512_bf16"})
    assert bf16_warnings(caplog) == []
    # ... but oneDNN limited below AVX512_CORE_BF16 emulates bf16: 47 ms against 5.6 ms an MLP step
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    (warning,) = bf16_warnings(caplog)
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in warning and "11x" in warning
    assert runtime.check_precision(torch.device("cpu"), "32") is None  # fp32: no word


def test_training_in_bf16_on_an_emulating_cpu_warns_before_the_first_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cpu(monkeypatch, "AVX2", {"avx2"})
    with caplog.at_level(logging.INFO, logger="vae"):
        train(compose_config([*FAST, "train.epochs=1", "train.precision=bf16-mixed"]), tmp_path / "run")
    messages = [r.getMessage() for r in caplog.records]
    warned = next(i for i, m in enumerate(messages) if "without native bf16" in m)
    assert warned < next(i for i, m in enumerate(messages) if m.startswith("epoch 1/1"))


def test_the_benchmark_says_which_cpu_features_it_ran_on(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("vae_bench", REPO / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = io.StringIO()
    monkeypatch.setattr(bench, "console", Console(file=out, width=300))

    class Stop(Exception):
        pass

    def stop(*args: object) -> None:
        raise Stop

    monkeypatch.setattr(bench, "prepare_data", stop)  # everything after the header: not run here
    fake_cpu(monkeypatch, "AVX2", {"avx2"})
    threads = torch.get_num_threads()
    with pytest.raises(Stop):
        bench.main(["--quick", "--variants", "bf16", "--threads", str(threads)])
    text = out.getvalue()
    assert "CPU features: torch capability AVX2; avx512_bf16 no, amx_bf16 no: bf16 emulated" in text
    assert "expect the bf16 row to be slower than fp32" in text
