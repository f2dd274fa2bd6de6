"""Values that would silently go wrong or run for days are refused before any work: seeds outside
[0, 2^32 - 1] (they would wrap), absurd sample counts and sizes; data outside [0, 1] under
loss=bernoulli; a data_dir that is a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_SYNTHETIC, run_vae
from vae_cli.cli import compose_config
from vae_cli.config import (
    DatasetConfig,
    validate_evaluate_config,
    validate_reconstruct_config,
    validate_sample_config,
    validate_score_config,
    validate_train_config,
)
from vae_cli.errors import ConfigError, DataError

SEED_RANGE = r"must be in \[0, 4294967295\] \(0 to 2\^32 - 1\)"
VALIDATE = {
    "train": validate_train_config,
    "sample": validate_sample_config,
    "reconstruct": validate_reconstruct_config,
    "evaluate": validate_evaluate_config,
    "score": validate_score_config,
}


def validate(command: str, *overrides: str) -> None:
    base = list(TINY_SYNTHETIC) if command == "train" else ["ckpt=some/run"]
    VALIDATE[command](compose_config([*base, *overrides], command))


# --- seeds -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(VALIDATE))
@pytest.mark.parametrize("seed", [2**32, 2**40, -1])
def test_every_commands_seed_outside_32_bits_is_refused_with_the_range(command: str, seed: int) -> None:
    with pytest.raises(ConfigError, match=rf"^seed={seed} is invalid: {SEED_RANGE}"):
        validate(command, f"seed={seed}")


@pytest.mark.parametrize("command", list(VALIDATE))
def test_the_largest_and_smallest_seeds_are_accepted(command: str) -> None:
    validate(command, f"seed={2**32 - 1}")
    validate(command, "seed=0")


def test_dataset_seed_outside_32_bits_is_refused() -> None:
    with pytest.raises(ConfigError, match=rf"^dataset.seed=1099511627776 is invalid: {SEED_RANGE}"):
        validate("train", f"dataset.seed={2**40}")
    validate("train", f"dataset.seed={2**32 - 1}")


# --- absurd sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "key", "largest", "rule"),
    [
        ("evaluate", "iwae_k", 100_000, r"must be in \[1, 100000\] \(Burda et al. use 5000\)"),
        (
            "score",
            "iwae_k",
            100_000,
            r"must be in \[0, 100000\] \(0 estimates by -ELBO; Burda et al. use 5000\)",
        ),
        ("score", "elbo_samples", 100_000, r"must be in \[1, 100000\]"),
        ("sample", "n", 1_000_000, r"must be in \[1, 1000000\]"),
        ("train", "objective.k", 10_000, r"must be in \[1, 10000\]"),
        (
            "train",
            "dataset.image_size",
            4096,
            r"must be in \[1, 4096\] \(larger images do not fit in memory\)",
        ),
    ],
)
def test_absurd_values_are_refused_and_the_largest_allowed_accepted(command, key, largest, rule) -> None:
    extra = ["objective=iwae"] if key == "objective.k" else []
    validate(command, *extra, f"{key}={largest}")
    with pytest.raises(ConfigError, match=rf"^{key}={largest + 1} is invalid: {rule}"):
        validate(command, *extra, f"{key}={largest + 1}")
    with pytest.raises(ConfigError, match=rf"^{key}=1000000000 is invalid"):
        validate(command, *extra, f"{key}=1000000000")


@pytest.mark.parametrize("dataset", ["image_folder", "celeba", "mnist"])
def test_image_size_bound_holds_for_every_dataset(dataset: str) -> None:
    with pytest.raises(ConfigError, match=r"dataset.image_size=20000 is invalid: must be in \[1, 4096\]"):
        validate_train_config(compose_config([f"dataset={dataset}", "dataset.image_size=20000"]))


# --- loss=bernoulli on data outside [0, 1] -----------------------------------------------------------------


def tensor_file(tmp_path: Path, high: float) -> Path:
    path = tmp_path / "counts.npy"
    rng = np.random.default_rng(0)
    np.save(path, (rng.random((40, 6)) * high).astype(np.float32))
    return path


def test_bernoulli_on_values_0_to_10_is_refused_at_the_start_naming_the_span(tmp_path: Path) -> None:
    from vae_cli.training.loop import train

    path = tensor_file(tmp_path, 10.0)
    cfg = compose_config(
        ["dataset=tensor", f"dataset.path={path}", "model=mlp", "loss=bernoulli", "train.epochs=1"]
    )
    values = np.load(path)
    span = rf"\[{values.min():.4g}, {values.max():.4g}\]"
    with pytest.raises(
        ConfigError,
        match=rf"^loss=bernoulli needs values in \[0, 1\]; the data spans {span}: "
        r"use loss=gaussian \(and dataset.standardize=true\) or scale it$",
    ):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bernoulli_on_values_in_0_1_trains(tmp_path: Path) -> None:
    from vae_cli.data import create_dataset
    from vae_cli.data.base import check_loss_range

    path = tensor_file(tmp_path, 1.0)
    # not standardised (the default for tables): the values as they are in the file
    data = create_dataset(DatasetConfig(name="tensor", path=str(path), standardize=False), tmp_path)
    check_loss_range(data, "bernoulli")  # no error
    wide_file = str(tensor_file(tmp_path, 3.0))
    wide = create_dataset(DatasetConfig(name="tensor", path=wide_file, standardize=False), tmp_path)
    check_loss_range(wide, "gaussian")  # gaussian takes any values
    with pytest.raises(ConfigError, match="loss=bernoulli needs values in"):
        check_loss_range(wide, "bernoulli")


# --- data_dir naming a file -----------------------------------------------------------------------------


def test_data_dir_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    from vae_cli.data import create_dataset

    file = tmp_path / "not_a_folder"
    file.write_text("")
    with pytest.raises(DataError, match=rf"^data_dir={file} is a file: point it at a folder"):
        create_dataset(DatasetConfig(name="synthetic", size=100, val_size=10, test_size=10), file)


def test_vae_data_dir_that_is_a_file_on_the_command_line(tmp_path: Path) -> None:
    file = tmp_path / "data.txt"
    file.write_text("")
    result = run_vae(["train", *TINY_SYNTHETIC, "train.epochs=1"], tmp_path, env={"VAE_DATA_DIR": str(file)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: data_dir={file}") and " is a file: point it at a folder" in line
