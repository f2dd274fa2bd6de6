"""Shared fixtures: tiny datasets in the real on-disk formats, and torch's global state left as found.

The CLI runners are in tests/helpers/cli.py and the tiny-data writers in tests/helpers/data.py; the names
below are re-exported from here for the tests that import them from tests.conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import (
    REPO,
    THREADS,
    loggers,
    only_run_dir,
    restore_torch_state,
    run_vae,
    torch_state,
    vae,
)
from tests.helpers.data import TINY_CONV_TRAIN, TINY_SYNTHETIC, make_celeba, make_idx_dataset

__all__ = ["REPO", "TINY_SYNTHETIC", "make_celeba", "make_idx_dataset", "only_run_dir", "run_vae"]


def pytest_configure(config: pytest.Config) -> None:
    # One thread per test process (two pytest-xdist workers share two cores), the same count as every
    # `vae` process the tests start (tests/helpers/cli.py), so that compared runs compute alike.
    torch.set_num_threads(THREADS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Each test, with the fixtures it sets up, leaves torch's, numpy's and Python's global RNGs and
    torch's thread count as it found them (tests that seed, in-process runs that call seed_everything),
    and logging too: a handler that a Hydra run in this process left behind (its log file, in a folder
    that goes away with the test) is removed and closed, and the loggers' levels are put back."""
    state = torch_state()
    before = {lg: (lg.level, list(lg.handlers)) for lg in loggers()}
    yield
    restore_torch_state(state)
    for lg in loggers():
        level, handlers = before.get(lg, (lg.level, []))
        for handler in list(lg.handlers):
            if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
                lg.removeHandler(handler)
                handler.close()
        lg.setLevel(level)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny conv model (TINY_CONV_TRAIN) trained once per test process, for the
    checkpoint commands' tests and the Python API's. Tests may add to it (log_to_run=true), never change
    what is there."""
    root = tmp_path_factory.mktemp("trained")
    trained = vae(TINY_CONV_TRAIN, root)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = (root / "outputs" / "train").glob("*/*")
    return run_dir
