"""Long evaluations and scorings say how far they are and how long is left when no progress bar can be
drawn (a log file, CI, a pipe): a line each tenth of the batches or each 15 s, with the time left."""

from __future__ import annotations

import io
import logging
import re

import pytest
import torch
from rich.console import Console

import vae_cli.estimators as estimators
from vae_cli.cli import compose_config
from vae_cli.data import ImageSplit
from vae_cli.estimators import ProgressLog, duration, estimate_split
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model

LINE = re.compile(r"^score: (\d+)/20 batches \((\d+)%\), \d+ s so far, about \d+ s left$")


@pytest.fixture
def model() -> torch.nn.Module:
    cfg = compose_config(
        ["dataset=synthetic", "model=mlp", "model.hidden_dims=[8]", "latent_dim=4", "loss=bernoulli"]
    )
    torch.manual_seed(0)
    return create_model(cfg.model, (1, 16, 16), cfg.latent_dim, create_likelihood(cfg.loss)).eval()


def split(n: int = 20) -> ImageSplit:
    g = torch.Generator().manual_seed(0)
    return ImageSplit(torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8))


def run(model, monkeypatch, caplog, terminal: bool) -> list[str]:
    monkeypatch.setattr(estimators, "PROGRESS_AFTER", 0.0)  # no quiet start: every line shows
    monkeypatch.setattr(estimators, "console", Console(file=io.StringIO(), force_terminal=terminal))
    with caplog.at_level(logging.INFO, logger="vae"):
        estimate_split(model, split(), binarize="none", k=2, seed=0, batch_size=1, label="score")
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("score:")]


def test_outside_a_terminal_a_line_per_tenth_with_the_time_left(model, monkeypatch, caplog) -> None:
    lines = run(model, monkeypatch, caplog, terminal=False)
    assert lines, "no progress lines outside a terminal"
    assert all(LINE.match(line) for line in lines), lines
    done = [int(LINE.match(line).group(1)) for line in lines]
    assert done == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # 20 batches: every 2nd is another tenth


def test_in_a_terminal_the_bar_shows_it_and_the_log_stays_quiet(model, monkeypatch, caplog) -> None:
    assert run(model, monkeypatch, caplog, terminal=True) == []


def test_a_short_pass_logs_nothing(model, monkeypatch, caplog) -> None:
    monkeypatch.setattr(estimators, "console", Console(file=io.StringIO(), force_terminal=False))
    with caplog.at_level(logging.INFO, logger="vae"):
        estimate_split(model, split(), binarize="none", k=2, seed=0, batch_size=1, label="score")
    assert not [r for r in caplog.records if "batches" in r.getMessage()]  # done in well under 5 s


def test_slow_batches_log_every_15_seconds_with_an_estimate(caplog) -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    progress = ProgressLog("evaluate", 1000, clock)
    with caplog.at_level(logging.INFO, logger="vae"):
        for _ in range(10):
            now[0] += 4.0  # 4 s a batch: a tenth would take 400 s
            progress.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "evaluate: 4/1000 batches (0%), 16 s so far, about 1 h 06 min left",
        "evaluate: 8/1000 batches (0%), 32 s so far, about 1 h 06 min left",
    ]


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (0, 42.4, 185, 7620)] == ["0 s", "42 s", "3 min 05 s", "2 h 07 min"]
