"""`vae sample`, `vae reconstruct`, `vae evaluate` end to end, on a checkpoint trained once for this module.

Training runs `python -m vae_cli train` in a subprocess. The commands under test are independent, so the
module runs them all right after, each in its own child process and folder, and each test then checks
its own run: exit code, files, PNG grid sizes, metrics, and one-line errors without a traceback.

On Linux the children are forked from this process, which has torch and the CLI imported already: the
same `vae_cli.cli.main` entrypoint with its own exit code and stderr, without paying Python's start-up and
the imports (seconds each) two dozen times. Elsewhere they are fresh interpreters.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from PIL import Image

import vae_cli.commands.evaluate  # noqa: F401  imported before forking, so the children start warm
import vae_cli.commands.reconstruct  # noqa: F401
import vae_cli.commands.sample  # noqa: F401
from vae_cli.checkpoint import FORMAT_VERSION, save_checkpoint
from vae_cli.cli import main

REPO = Path(__file__).resolve().parent.parent
SIZE, LATENT, PAD = 16, 4, 2  # image size, latent_dim, and make_grid's padding
TRAIN = [
    "train",
    "dataset=synthetic",
    "dataset.size=300",
    "dataset.val_size=50",
    "dataset.test_size=50",
    f"dataset.image_size={SIZE}",
    "model.channels=[8,16]",
    f"latent_dim={LATENT}",
    "train.epochs=1",
    "train.batch_size=32",
    "train.image_every=0",
]


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cli_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def subprocess_vae(args: list[str], cwd: Path) -> Result:
    """`python -m vae_cli <args>` in a fresh interpreter."""
    p = subprocess.run(
        [sys.executable, "-m", "vae_cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def _child(args: list[str], cwd: Path, out: Path, err: Path) -> None:
    """In a forked child: point stdout/stderr at files, run the CLI, exit with its code. Never returns."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115  (pytest had replaced them)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(cli_env())
        torch.set_num_threads(1)  # OpenMP's threads do not survive a fork
        try:
            main(args)
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


def run_all(
    commands: dict[str, list[str]], root: Path, parallel: int = 2, patience: float = 120
) -> dict[str, Result]:
    """Run `vae <args>` for every command, each in root/<name>/, `parallel` at a time.

    A forked child that has not finished after `patience` seconds (a fork can inherit a lock held by
    one of the parent's threads) is killed and its command rerun in a fresh interpreter."""
    if sys.platform != "linux":
        return {name: subprocess_vae(args, _mkdir(root / name)) for name, args in commands.items()}
    pending, running, results = list(commands.items()), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            name, args = pending.pop(0)
            cwd = _mkdir(root / name)
            pid = os.fork()
            if pid == 0:
                _child(args, cwd, cwd / "stdout.txt", cwd / "stderr.txt")
            running[pid] = (name, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (name, started) in list(running.items()):
                if time.monotonic() - started > patience:
                    os.kill(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    del running[child]
                    results[name] = subprocess_vae(commands[name], root / name)
            time.sleep(0.02)
            continue
        name, _ = running.pop(pid)
        cwd = root / name
        results[name] = Result(
            os.waitstatus_to_exitcode(status),
            (cwd / "stdout.txt").read_text(),
            (cwd / "stderr.txt").read_text(),
        )
    return results


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def grid_size(rows: int, cols: int, size: int = SIZE) -> tuple[int, int]:
    """(width, height) of a torchvision grid of rows x cols images of size x size."""
    return cols * (size + PAD) + PAD, rows * (size + PAD) + PAD


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def write_inputs(folder: Path) -> Path:
    """Two readable images of other sizes and modes, and two files that are not images."""
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    rgb = (torch.rand(40, 70, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(rgb).save(folder / "wide.jpg")
    Image.fromarray(rgb[:, :30, 0]).convert("LA").save(folder / "grey.png")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train once, prepare bad checkpoints and inputs, then run every command below."""
    root = tmp_path_factory.mktemp("cli")
    trained = subprocess_vae(TRAIN, root)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = (root / "outputs" / "train").glob("*/*")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    events_before = len(list((run_dir / "tensorboard").iterdir()))

    bad = _mkdir(root / "bad")
    (bad / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    (bad / "random.ckpt").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    _mkdir(bad / "empty_run")
    payload = torch.load(ckpt, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    save_checkpoint(bad / "future.ckpt", payload)
    (_mkdir(bad / "only_text") / "a.txt").write_text("hello\n")
    inputs = write_inputs(root / "inputs")

    out = root / "out"
    commands = {
        "sample": [
            "sample",
            f"ckpt={run_dir}",
            "n=12",
            "nrow=4",
            "save_tensor=true",
            "seed=3",
            "log_to_run=true",
        ],
        "sample_again": [
            "sample",
            f"ckpt={ckpt}",
            "n=12",
            "nrow=4",
            "save_tensor=true",
            "seed=3",
            f"out={out}/s",
        ],
        "draw": ["sample", f"ckpt={ckpt}", "mode=draw", "n=5", "nrow=5", "save_tensor=true"],
        "traverse": ["sample", f"ckpt={run_dir}", "mode=traverse", "steps=5", "base=image"],
        "interpolate": [
            "sample",
            f"ckpt={run_dir}",
            "mode=interpolate",
            "pairs=3",
            "steps=6",
            "method=slerp",
        ],
        "reconstruct": ["reconstruct", f"ckpt={run_dir}", "split=test", "n=10", "nrow=5", "log_to_run=true"],
        "reconstruct_input": ["reconstruct", f"ckpt={run_dir}", f"input={inputs}"],
        "evaluate": ["evaluate", f"ckpt={run_dir}", "iwae_k=64", "seed=1", "log_to_run=true"],
        "evaluate_val_a": ["evaluate", f"ckpt={ckpt}", "iwae_k=64", "seed=1", "split=val", f"out={out}/ea"],
        "evaluate_val_b": ["evaluate", f"ckpt={ckpt}", "iwae_k=64", "seed=1", "split=val", f"out={out}/eb"],
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
    results = run_all(commands, root / "runs")
    return {"root": root / "runs", "run_dir": run_dir, "out": out, "events_before": events_before, **results}


def ok(runs: dict, name: str) -> Result:
    result = runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def run_folder(runs: dict, name: str, command: str) -> Path:
    """The outputs/<command>/<date>/<time>/ folder that run `name` wrote (in its own working folder)."""
    (folder,) = (runs["root"] / name / "outputs" / command).glob("*/*")
    return folder


def test_sample_writes_a_grid_and_the_tensor_and_logs_to_the_run(runs) -> None:
    result = ok(runs, "sample")
    folder = run_folder(runs, "sample", "sample")
    assert png_size(folder / "samples.png") == grid_size(rows=3, cols=4)
    images = torch.load(folder / "samples.pt", weights_only=True)
    assert images.shape == (12, 1, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    assert str(folder / "samples.png") in result.stderr.replace("\n", "")  # says where it wrote
    assert (folder / ".hydra" / "config.yaml").is_file() and (folder / "sample.log").is_file()
    # log_to_run=true (here, in reconstruct and in evaluate) added event files to the training run
    assert len(list((runs["run_dir"] / "tensorboard").iterdir())) > runs["events_before"]


def test_sample_is_reproducible_and_out_is_the_whole_run_folder(runs) -> None:
    ok(runs, "sample_again")
    first = torch.load(run_folder(runs, "sample", "sample") / "samples.pt", weights_only=True)
    again = torch.load(runs["out"] / "s" / "samples.pt", weights_only=True)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (runs["out"] / "s" / "sample.log").is_file() and (runs["out"] / "s" / ".hydra").is_dir()
    assert not (runs["root"] / "sample_again" / "outputs").exists()


def test_sample_draw_gives_binary_pixels_for_a_bernoulli_model(runs) -> None:
    ok(runs, "draw")
    folder = run_folder(runs, "draw", "sample")
    images = torch.load(folder / "samples.pt", weights_only=True)
    assert images.shape == (5, 1, SIZE, SIZE)
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert png_size(folder / "samples.png") == grid_size(rows=1, cols=5)


def test_traverse_has_a_row_per_latent_dimension_by_kl(runs) -> None:
    ok(runs, "traverse")
    folder = run_folder(runs, "traverse", "sample")
    assert png_size(folder / "traverse.png") == grid_size(rows=LATENT, cols=5)
    rows = json.loads((folder / "traverse.json").read_text())["rows"]
    assert sorted(r["dim"] for r in rows) == list(range(LATENT))
    kls = [r["kl"] for r in rows]
    assert kls == sorted(kls, reverse=True)


def test_interpolate_has_a_row_per_pair(runs) -> None:
    ok(runs, "interpolate")
    assert png_size(run_folder(runs, "interpolate", "sample") / "interpolate.png") == grid_size(
        rows=3, cols=6
    )


def test_reconstruct_puts_originals_above_reconstructions(runs) -> None:
    ok(runs, "reconstruct")
    folder = run_folder(runs, "reconstruct", "reconstruct")
    # 10 images in rows of 5: original row, reconstruction row, original row, reconstruction row
    assert png_size(folder / "reconstructions.png") == grid_size(rows=4, cols=5)


def test_reconstruct_own_images_converted_and_non_images_skipped(runs) -> None:
    result = ok(runs, "reconstruct_input")
    folder = run_folder(runs, "reconstruct_input", "reconstruct")
    assert png_size(folder / "reconstructions.png") == grid_size(rows=2, cols=2)
    assert sorted(p.name for p in (folder / "reconstructions").iterdir()) == [
        "0000_grey.png",
        "0001_wide.png",
    ]
    assert png_size(folder / "reconstructions" / "0001_wide.png") == (SIZE, SIZE)
    # one reader for every folder of images (vae_cli.data.readers): a broken image is skipped with a
    # warning, a file without an image extension is ignored with a note
    assert "skipped 1 unreadable" in result.stderr and "broken.png" in result.stderr
    assert "ignored 1 file(s) without an image extension" in result.stderr and "notes.txt" in result.stderr


def test_evaluate_writes_finite_ordered_metrics(runs) -> None:
    result = ok(runs, "evaluate")
    m = json.loads((run_folder(runs, "evaluate", "evaluate") / "metrics_test.json").read_text())
    assert m["split"] == "test" and m["num_examples"] == 50 and m["iwae_k"] == 64
    for key in (
        "neg_elbo",
        "recon",
        "kl",
        "iwae_nll",
        "elbo_bits_per_dim",
        "iwae_bits_per_dim",
        "probe_accuracy",
    ):
        assert math.isfinite(m[key]), key
    assert m["iwae_nll"] <= m["neg_elbo"]  # the importance-weighted bound is the tighter one
    assert m["neg_elbo"] == pytest.approx(m["recon"] + m["kl"])
    assert m["iwae_bits_per_dim"] == pytest.approx(m["iwae_nll"] / (SIZE * SIZE * math.log(2)))
    assert len(m["kl_per_dim"]) == LATENT and len(m["mu_variance_per_dim"]) == LATENT
    assert m["active_units"] == sum(v > 0.01 for v in m["mu_variance_per_dim"])
    assert 0 <= m["probe_accuracy"] <= 1 and m["probe_train_examples"] == 200
    assert "IWAE" in result.stderr  # the rich table


def test_evaluate_is_reproducible_given_the_seed(runs) -> None:
    ok(runs, "evaluate_val_a")
    ok(runs, "evaluate_val_b")
    first = json.loads((runs["out"] / "ea" / "metrics_val.json").read_text())
    second = json.loads((runs["out"] / "eb" / "metrics_val.json").read_text())
    for m in (first, second):
        m.pop("wall_time_s")
    assert first == second


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
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]
    if name == "future":  # names both versions
        assert f"version {FORMAT_VERSION}" in errors[0].split(f"version {FORMAT_VERSION + 1}", 1)[1]


def test_python_api(runs) -> None:
    from vae_cli import load_model

    model = load_model(runs["run_dir"], device="cpu")
    assert model.config.latent_dim == LATENT and model.config.dataset.name == "synthetic"
    x = torch.rand(3, 1, SIZE, SIZE)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, LATENT)
    assert model.decode(mu).shape == (3, 1, SIZE, SIZE)  # Bernoulli logits
    assert model.sample(5).shape == (5, 1, SIZE, SIZE)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    assert not model.training


def test_import_vae_cli_stays_light() -> None:
    """load_model is imported on first use: importing the package alone does not load torch."""
    code = "import sys, vae_cli; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- the pieces, in process ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sample", "reconstruct", "evaluate"])
def test_primary_configs_compose_validate_and_honour_out(command: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from vae_cli import config
    from vae_cli.cli import config_dir

    config.register_configs()
    validate = getattr(config, f"validate_{command}_config")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(command, overrides=["ckpt=run"], return_hydra_config=True)
            validate(cfg)
            assert cfg.hydra.job.name == command and cfg.hydra.run.dir.startswith(f"outputs/{command}/")
            cfg = compose(command, overrides=["ckpt=run", f"out={tmp_path}"], return_hydra_config=True)
            assert cfg.hydra.run.dir == str(tmp_path)  # out= is the whole run folder
            with pytest.raises(ConfigCompositionException):
                compose(command, overrides=["ckpt=run", "sed=1"])  # a typo is an error, not a new key
    finally:
        GlobalHydra.instance().clear()


def test_slerp_keeps_the_norm_and_falls_back_to_linear() -> None:
    from vae_cli.commands.sample import slerp

    a = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [4.0, 0.0, 0.0]])  # the second pair is parallel
    z = slerp(a, b, torch.linspace(0, 1, 5))
    assert z.shape == (2, 5, 3) and torch.isfinite(z).all()
    torch.testing.assert_close(z[:, 0], a)
    torch.testing.assert_close(z[:, -1], b)
    torch.testing.assert_close(z[0].norm(dim=-1), torch.ones(5))  # on the great circle
    torch.testing.assert_close(z[1, :, 0], torch.linspace(2, 4, 5))  # linear for parallel codes


def test_traversal_sweeps_one_dimension_per_row() -> None:
    from types import SimpleNamespace

    from vae_cli.commands.sample import traversal

    identity = SimpleNamespace(decode=lambda z: z, likelihood=SimpleNamespace(mean=lambda p: p))
    base = torch.tensor([0.5, -0.5, 0.25])
    values = torch.tensor([-3.0, 0.0, 3.0])
    z = traversal(identity, base, torch.tensor([2, 0]), values).view(2, 3, 3)
    torch.testing.assert_close(z[0, :, 2], values)  # row 0 sweeps dimension 2...
    torch.testing.assert_close(z[0, :, :2], base[:2].expand(3, 2))  # ...holding the others at the base
    torch.testing.assert_close(z[1, :, 0], values)
    torch.testing.assert_close(z[1, :, 1:], base[1:].expand(3, 2))


def test_read_images_converts_mode_and_size(tmp_path: Path) -> None:
    from vae_cli.data.readers import read_images

    folder = write_inputs(tmp_path / "in")
    found = read_images(folder, (3, 8, 8))
    assert [f.name for f in found.files] == ["grey.png", "wide.jpg"]
    assert found.images.shape == (2, 3, 8, 8) and found.images.dtype == torch.uint8
    found = read_images(folder / "wide.jpg", (1, 12, 12))
    assert found.images.shape == (1, 1, 12, 12)
