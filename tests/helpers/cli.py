"""Every way the tests run the `vae` CLI, from the cheapest to the most faithful.

- `vae(args, cwd)` and `vae_all(commands, root)`: `vae <args>` in this process (`vae_cli.cli.main`,
  Hydra and all), with stdout and stderr captured and an exit code from SystemExit. For tests about the
  files and metrics a command writes. It leaves the working folder, the environment, sys.argv, logging,
  Hydra's globals, the signal handlers and torch's RNGs and thread count as it found them.
- Tests about the training loop alone compose the config (`vae_cli.cli.compose_config`) and call
  `vae_cli.training.loop.train(cfg, run_dir)` themselves (tests/training/test_loop.py): no Hydra run.
- `fork_vae(args, cwd)`, `run_all(commands, root)` and `fork_all(jobs)`: `vae <args>` in a child
  process forked from this one, which has torch and the CLI imported already: a real process with its
  own exit code and stderr, without Python's start-up and the imports (seconds each). For tests about
  exit codes and the one-line errors on stderr, and for runs whose global state (torch.compile, Hydra's
  multirun) should not stay in this process. Elsewhere than on Linux they are fresh interpreters.
- `run_vae(args, cwd)` and `start_vae(args, cwd)`: `python -m vae_cli <args>` in a fresh interpreter,
  waited for or left running: for signals, for launchers whose worker processes end with the
  interpreter (joblib, submitit), and for what a fresh process imports.
- `torchrun(args, cwd)` and `torchrun_command(args)`: `torchrun --standalone -m vae_cli <args>`, for DDP.

Every child runs with the same torch thread count as the tests themselves (THREADS), so that runs
compared against each other compute the same sums in the same order wherever they ran.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
#: torch's threads in the test processes and every `vae` they start: one per pytest-xdist worker.
THREADS = 1


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `vae` process started by a test."""
    full = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COLUMNS": "200",
        "OMP_NUM_THREADS": str(THREADS),
        **(env or {}),
    }
    full.pop("HYDRA_FULL_ERROR", None)
    return full


# --- in this process -----------------------------------------------------------------------------------


class TorchState(NamedTuple):
    torch_rng: torch.Tensor
    numpy_rng: Any
    python_rng: Any
    threads: int


def torch_state() -> TorchState:
    """The global RNGs (which seed_everything reseeds) and torch's thread count."""
    return TorchState(
        torch.get_rng_state(), np.random.get_state(), random.getstate(), torch.get_num_threads()
    )


def restore_torch_state(state: TorchState) -> None:
    torch.set_rng_state(state.torch_rng)
    np.random.set_state(state.numpy_rng)
    random.setstate(state.python_rng)
    if torch.get_num_threads() != state.threads:
        torch.set_num_threads(state.threads)


def loggers() -> list[logging.Logger]:
    """The root logger and every named one."""
    return [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]


def clear_hydra() -> None:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@contextlib.contextmanager
def as_a_process(cwd: Path, env: dict[str, str] | None = None) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Run the body as `vae` would run in a process of its own: in `cwd`, with the environment of
    cli_env(env), stdout and stderr into the two StringIOs it yields. Everything it changes of this
    process is put back afterwards: the working folder, the environment, sys.argv, Hydra's globals,
    logging (Hydra configures it for the run: a log file in the run folder, the console handler),
    the SIGINT/SIGTERM handlers, torch's, numpy's and Python's RNGs and torch's thread count."""
    from vae_cli.sweep import guard

    old_cwd, old_env, old_argv = os.getcwd(), dict(os.environ), list(sys.argv)
    old_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old_loggers = {lg: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers()}
    old_handlers = {h for _, handlers, _, _ in old_loggers.values() for h in handlers}
    state = torch_state()
    out, err = io.StringIO(), io.StringIO()
    environment = cli_env(env)
    clear_hydra()
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        sys.argv[:] = old_argv
        clear_hydra()
        guard.ACTIVE.clear()
        if threading.current_thread() is threading.main_thread():
            for sig, handler in old_signals.items():
                signal.signal(sig, handler)
        for lg in loggers():
            for handler in lg.handlers:
                if handler not in old_handlers:
                    handler.close()  # the run's log file
            lg.level, handlers, lg.propagate, lg.disabled = old_loggers.get(
                lg, (logging.NOTSET, [], True, False)
            )
            lg.handlers = handlers
        restore_torch_state(state)


def vae(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Result:
    """`vae <args>` run in this process, in `cwd`: its exit code (SystemExit's), stdout and stderr.

    A bug (an exception that is not a user error) is raised here, with its traceback, instead of
    becoming exit code 1."""
    from vae_cli.cli import main

    code = 0
    with as_a_process(cwd, env) as (out, err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return Result(code, out.getvalue(), err.getvalue())


def vae_all(commands: dict[str, list[str]], root: Path) -> dict[str, Result]:
    """`vae <args>` for every name -> args, each in root/<name>/, one after the other in this process."""
    results = {}
    for name, args in commands.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        results[name] = vae(args, root / name)
    return results


# --- in a forked child ---------------------------------------------------------------------------------


def _child(args: list[str], cwd: Path, env: dict[str, str] | None, out: Path, err: Path) -> None:
    """In a forked child: point stdout/stderr at files, run the CLI, exit with its code. Never returns."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115  (pytest had replaced them)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(cwd)
        environment = cli_env(env)
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(THREADS)  # OpenMP's threads do not survive a fork
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        clear_hydra()
        from vae_cli.cli import main

        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:  # noqa: BLE001  what the interpreter would print before dying
            traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_all(
    jobs: dict[str, tuple[list[str], Path]],
    env: dict[str, str] | None = None,
    parallel: int = 2,
    patience: float = 300,
) -> dict[str, Result]:
    """Run `vae <args>` in `cwd` for every name -> (args, cwd), each in a child forked from this process,
    `parallel` at a time: name -> its exit code, stdout and stderr.

    A child that has not finished after `patience` seconds (a fork can inherit a lock held by one of
    this process's threads) is killed and its command rerun in a fresh interpreter."""
    for _, cwd in jobs.values():
        cwd.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux":
        return {name: _fresh(args, cwd, env) for name, (args, cwd) in jobs.items()}
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="vae-fork-") as tmp:
        captured = {name: (Path(tmp) / f"{i}.out", Path(tmp) / f"{i}.err") for i, name in enumerate(jobs)}
        pending, running = list(jobs), {}
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write this process's buffered output again
        while pending or running:
            while pending and len(running) < parallel:
                name = pending.pop(0)
                args, cwd = jobs[name]
                pid = os.fork()
                if pid == 0:
                    _child(args, cwd, env, *captured[name])
                running[pid] = (name, time.monotonic())
            time.sleep(0.01)
            for child, (name, started) in list(running.items()):
                done, status = os.waitpid(child, os.WNOHANG)  # only ours: a test's Popen is not reaped here
                if done:
                    del running[child]
                    out, err = captured[name]
                    results[name] = Result(
                        os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()
                    )
                elif time.monotonic() - started > patience:
                    os.kill(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    del running[child]
                    results[name] = _fresh(*jobs[name], env)
    return {name: results[name] for name in jobs}


def fork_vae(args: list[str], cwd: Path, env: dict[str, str] | None = None, patience: float = 300) -> Result:
    """`vae <args>` in a child forked from this process, in `cwd`: its exit code, stdout and stderr."""
    return fork_all({"run": (args, cwd)}, env, parallel=1, patience=patience)["run"]


def run_all(
    commands: dict[str, list[str]], root: Path, parallel: int = 2, patience: float = 120
) -> dict[str, Result]:
    """`vae <args>` for every name -> args, each in root/<name>/ and a forked child, `parallel` at a time."""
    return fork_all({name: (args, root / name) for name, args in commands.items()}, None, parallel, patience)


# --- in a fresh interpreter ----------------------------------------------------------------------------


def run_vae(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m vae_cli ...`) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "vae_cli", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _fresh(args: list[str], cwd: Path, env: dict[str, str] | None) -> Result:
    p = run_vae(args, cwd, env)
    return Result(p.returncode, p.stdout, p.stderr)


def start_vae(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m vae_cli <args>` started in a subprocess, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "vae_cli", *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def torchrun_command(args: list[str], nproc: int = 2) -> tuple[list[str], dict[str, str]]:
    env = cli_env()
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "vae_cli",
        *args,
    ]
    return command, env


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    command, env = torchrun_command(args, nproc)
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"torchrun timed out; stderr: {e.stderr!s:.3000}") from None


# --- what the runs wrote -------------------------------------------------------------------------------


def run_dirs(cwd: Path, command: str = "train") -> list[Path]:
    """The run folders outputs/<command>/<date>/<time>/ under cwd, oldest first."""
    return sorted(p for p in (cwd / "outputs" / command).glob("*/*") if p.is_dir())


def only_run_dir(cwd: Path, command: str = "train") -> Path:
    runs = run_dirs(cwd, command)
    assert len(runs) == 1, runs
    return runs[0]


def ok(runs: dict[str, Result], name: str) -> Result:
    """Run `name` of a table of runs (vae_all's), which must have succeeded without a traceback."""
    result = runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def run_folder(runs: dict, name: str, command: str) -> Path:
    """The outputs/<command>/<date>/<time>/ folder that run `name` of a table of runs wrote in its own
    working folder, runs["root"]/<name>/ (vae_all's)."""
    return only_run_dir(runs["root"] / name, command)


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def only_sweep_dir(cwd: Path) -> Path:
    sweeps = sorted(p for p in (cwd / "outputs" / "train" / "multirun").glob("*/*") if p.is_dir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_dirs(sweep: Path) -> list[Path]:
    """A sweep's job folders, in job order."""
    return sorted(
        (p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0])
    )


def one_error(code: int, err: str) -> str:
    """The single `error:` line of a refused command (exit code 2, no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]
