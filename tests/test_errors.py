"""Bad input across every subcommand (vae_cli/errors.py): a non-zero exit, one clear `error:` line on
stderr, no traceback. Each case runs through the real CLI in a child process forked from this one
(tests/helpers/cli.py), with its own exit code and stderr, two at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import fork_all, only_run_dir, vae
from tests.helpers.data import TINY_SYNTHETIC, make_idx_dataset

TINY = [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0", "device=cpu"]


def make_files(root: Path, ckpt: Path) -> dict[str, Path]:
    """The bad files the table refers to, and a good checkpoint."""
    text = root / "notes.txt"
    text.write_text("not a checkpoint\n")
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1500])
    empty_data = root / "empty_data"
    empty_data.mkdir()
    corrupt = make_idx_dataset(root / "corrupt_data")
    images = corrupt / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-500])
    return {"ckpt": ckpt, "text": text, "truncated": truncated, "empty_data": empty_data, "corrupt": corrupt}


def cases(f: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, a phrase the error line must contain)."""
    ckpt = f["ckpt"]
    mnist = ["train", "dataset=mnist", "model=mlp", "dataset.download=false", "dataset.val_size=20"]
    return {
        "not a number": (["train", *TINY, "latent_dim=abc"], "could not be converted to Integer"),
        "zero latent_dim": (["train", *TINY, "latent_dim=0"], "latent_dim=0 is invalid"),
        "negative beta": (["train", *TINY, "beta=-1"], "beta=-1.0 is invalid"),
        "zero lr": (["train", *TINY, "train.lr=0"], "train.lr=0.0 is invalid"),
        "misspelt key": (["train", *TINY, "latnt_dim=8"], "latnt_dim"),
        "unknown model": (["train", *TINY, "model=nonexistent"], "model/nonexistent"),
        "unknown dataset": (["train", *TINY, "dataset=imagenet"], "dataset/imagenet"),
        "unknown optimizer": (["train", *TINY, "train.optimizer=sgd"], "choose one of adam, adamw"),
        "fp16 on cpu": (["train", *TINY, "train.precision=16-mixed"], "needs a CUDA device"),
        "no such gpu": (["train", *TINY, "device=cuda"], "device=cuda is not available"),
        "too many conv layers": (["train", *TINY, "model.channels=[4,4,4,4,4,4]"], "too many for 16x16"),
        "too little data": (["train", *TINY, "dataset.size=50"], "dataset.size=50"),
        "missing dataset files": (
            [*mnist, f"data_dir={f['empty_data']}"],
            "t10k-images-idx3-ubyte",
        ),
        "corrupt dataset file": (
            [*mnist, f"data_dir={f['corrupt']}"],
            "truncated or corrupt",
        ),
        "missing checkpoint": (["train", *TINY, "train.resume=/no/such.ckpt"], "does not exist"),
        "foreign checkpoint": (["train", *TINY, f"train.resume={f['text']}"], "not a vae checkpoint"),
        "truncated checkpoint": (
            ["train", *TINY, f"train.resume={f['truncated']}"],
            "not a readable vae checkpoint",
        ),
        "another model's checkpoint": (
            ["train", *TINY, "latent_dim=6", f"train.resume={ckpt}"],
            "latent_dim",
        ),
        "unwritable output folder": (["train", *TINY, "hydra.run.dir=/proc/vae/run"], "cannot write"),
        "unknown command": (["trian"], "unknown command 'trian'"),
        "sample without ckpt": (["sample"], "ckpt"),
        "sample foreign ckpt": (["sample", f"ckpt={f['text']}"], "not a vae checkpoint"),
        "sample zero images": (["sample", f"ckpt={ckpt}", "n=0"], "n=0"),
        "reconstruct missing input": (
            ["reconstruct", f"ckpt={ckpt}", "input=/no/such/folder"],
            "/no/such/folder",
        ),
        "evaluate bad split": (["evaluate", f"ckpt={ckpt}", "split=banana"], "choose one of"),
        "evaluate zero samples": (["evaluate", f"ckpt={ckpt}", "iwae_k=0"], "iwae_k=0"),
    }


NAMES = list(cases(dict.fromkeys(["ckpt", "text", "truncated", "empty_data", "corrupt"], Path("x"))))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case, run through the real CLI in forked children, two at a time."""
    root = tmp_path_factory.mktemp("bad")
    assert vae(["train", *TINY], root).returncode == 0
    table = cases(make_files(root, only_run_dir(root) / "checkpoints" / "last.ckpt"))
    folders = {name: root / f"case{i}" for i, name in enumerate(table)}
    runs = fork_all({name: (argv, folders[name]) for name, (argv, _) in table.items()}, parallel=2)
    return {name: (runs[name], table[name][1]) for name in table}


def test_there_are_at_least_twenty_cases() -> None:
    assert len(NAMES) >= 20


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_gives_one_clear_line(results: dict, name: str) -> None:
    result, phrase = results[name]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and phrase in lines[0], lines[0]
