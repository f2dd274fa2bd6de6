"""What the checkpoint commands share (vae_cli/commands/common.py, vae_cli/api.py): a bad checkpoint or
bad input fails with one line, exit code 2 and no traceback. Each command runs in a child process forked
from this one (tests/helpers/cli.py), with its own exit code and stderr."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.cli import one_error, run_all
from vae_cli.checkpoint import FORMAT_VERSION, save_checkpoint


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def runs(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Bad checkpoints and inputs made from the session's checkpoint, then every command below."""
    root = tmp_path_factory.mktemp("common")
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    bad = _mkdir(root / "bad")
    (bad / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    (bad / "random.ckpt").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    _mkdir(bad / "empty_run")
    payload = torch.load(ckpt, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    save_checkpoint(bad / "future.ckpt", payload)
    (_mkdir(bad / "only_text") / "a.txt").write_text("hello\n")
    commands = {
        # bad input: each must fail with one line, exit code 2 and no traceback
        "no_ckpt": ["evaluate"],
        "missing": ["sample", f"ckpt={root / 'nowhere.ckpt'}"],
        "empty_run": ["sample", f"ckpt={bad / 'empty_run'}"],
        "truncated": ["reconstruct", f"ckpt={bad / 'truncated.ckpt'}"],
        "random": ["evaluate", f"ckpt={bad / 'random.ckpt'}"],
        "future": ["sample", f"ckpt={bad / 'future.ckpt'}"],
        "no_images": ["reconstruct", f"ckpt={ckpt}", f"input={bad / 'only_text'}"],
        "bad_mode": ["sample", f"ckpt={ckpt}", "mode=sideways"],
        "bad_range": ["sample", f"ckpt={ckpt}", "mode=traverse", "range=[3,-3]"],
    }
    return {"root": root / "runs", **run_all(commands, root / "runs")}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_ckpt", "ckpt is required"),
        ("missing", "does not exist"),
        ("empty_run", "no checkpoints/best.ckpt"),
        ("truncated", "not a readable vae checkpoint"),
        ("random", "not a vae checkpoint"),
        ("future", f"version {FORMAT_VERSION + 1}"),
        ("no_images", "no readable images"),
        ("bad_mode", "mode=sideways is invalid"),
        ("bad_range", "range="),
    ],
)
def test_bad_input_gives_one_line_error(runs, name: str, message: str) -> None:
    result = runs[name]
    line = one_error(result.returncode, result.stderr)
    assert message in line
    if name == "future":  # names both versions
        assert f"version {FORMAT_VERSION}" in line.split(f"version {FORMAT_VERSION + 1}", 1)[1]
