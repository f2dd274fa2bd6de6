"""The CLI's input handling (issue 14): `vae report key=value`, unknown `+keys` and misspelt keys, `--cfg`
only for valid configs, paths with `~`/spaces/non-ASCII letters, out-of-memory as one line, `vae
--version`, and paths that exist but are the wrong kind."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import TINY_SYNTHETIC
from tests.helpers.cli import one_error, vae
from vae_cli import paths
from vae_cli.cli import check_added_keys, compose_config, out_of_memory
from vae_cli.errors import CheckpointError, ConfigError, OutOfMemory

TRAIN = ["train", *TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"]


@pytest.fixture
def run(trained_run: Path) -> Path:
    """The session's tiny training run (`trained_run`, tests/conftest.py): never changed by these tests
    (copy it to change it)."""
    return trained_run


# --- 4. vae report key=value -------------------------------------------------------------------------------


def test_report_takes_key_value_like_every_other_command(tmp_path: Path) -> None:
    from vae_cli.commands.report import parse_args

    args = parse_args(["~/sweep", f"out={tmp_path}/plots", "samples=0", "seed=3", "device=CPU"])
    assert args.folder == Path("~/sweep").expanduser() and args.out == tmp_path / "plots"
    assert (args.samples, args.seed, args.device) == (0, 3, "cpu")
    defaults = parse_args(["sweep"])
    assert (defaults.out, defaults.samples, defaults.seed, defaults.device) == (None, 16, 0, "cpu")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["sweep", "--out", "x"], "vae report takes out=<value>, not --out"),
        (["sweep", "--samples=4"], "vae report takes samples=<value>, not --samples=4"),
        (["sweep", "outt=x"], "outt is not a key of vae report; did you mean out=?"),
        (["sweep", "samples=-1"], "samples=-1 is invalid"),
        (["sweep", "seed=x"], "seed=x is invalid"),
        ([], "vae report needs a sweep folder"),
        (["a", "b"], "takes one sweep folder"),
    ],
)
def test_report_arguments_it_does_not_take_are_one_line(tmp_path: Path, args: list[str], phrase: str) -> None:
    code, _, err = vae(["report", *args], tmp_path)
    assert phrase in one_error(code, err)


def test_report_help_shows_the_key_value_spelling(tmp_path: Path) -> None:
    code, out, _ = vae(["report", "--help"], tmp_path)
    assert code == 0
    assert "vae report <sweep folder> [out=<folder>] [samples=16] [seed=0] [device=cpu]" in out
    assert "--out" not in out


# --- 5. +key that no schema knows, misspelt keys ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["+train.epoch=5"], "train.epoch is not a key of vae train; did you mean train.epochs"),
        (["++train.epoch=5"], "did you mean train.epochs"),
        (["+latnt_dim=8"], "did you mean latent_dim"),
        (["latnt_dim=8"], "latnt_dim is not a key of vae train; did you mean latent_dim?"),
        (["model=mlp", "model.hidden_dim=[8]"], "not a key of model=mlp; did you mean model.hidden_dims?"),
        (["model=mlp", "+model.hidden_dim=[8]"], "did you mean model.hidden_dims?"),
        (
            ["model=conv", "model.hidden_dims=[8]"],
            "not a key of model=conv (it is a key of model=mlp, model=ladder)",
        ),
    ],
)
def test_unknown_keys_are_refused_with_a_suggestion_never_a_plus(
    tmp_path: Path, args: list[str], phrase: str
) -> None:
    code, _, err = vae(["train", *args], tmp_path)
    line = one_error(code, err)
    assert phrase in line and "vae train" in line and "--help" in line
    assert "+" not in line.replace("++", "")  # no `use +key=...` advice
    assert not (tmp_path / "outputs").exists()


def test_a_checkpoint_commands_misspelt_key_points_to_its_help(tmp_path: Path) -> None:
    code, _, err = vae(["sample", "ckpt=x", "tempreature=0.5"], tmp_path)
    line = one_error(code, err)
    assert "did you mean temperature?" in line and "vae sample --help" in line


def test_plus_on_a_known_key_or_a_group_is_allowed() -> None:
    cfg = compose_config(["++latent_dim=8"])
    check_added_keys(cfg, ["++latent_dim=8"], "train")
    assert cfg.latent_dim == 8
    check_added_keys(cfg, ["+hydra.job.env_set.X=1"], "train")  # Hydra's own settings are Hydra's
    added = compose_config(["+train.epoch=5"])  # what a sweep's job sees: refused when it starts
    with pytest.raises(ConfigError, match="train.epoch is not a key of vae train"):
        check_added_keys(added, ["+train.epoch=5"], "train")


# --- 6. --cfg prints only configs the command accepts ------------------------------------------------------


@pytest.mark.parametrize("flag", [["--cfg", "job"], ["--cfg", "all"], ["--cfg", "hydra"], ["-c", "job"]])
def test_cfg_validates_before_it_prints(tmp_path: Path, flag: list[str]) -> None:
    code, out, err = vae(["train", "latent_dim=-1", *flag], tmp_path)
    assert "latent_dim=-1 is invalid" in one_error(code, err)
    assert out == ""
    code, out, err = vae(["sample", "ckpt=x", "n=0", *flag], tmp_path)
    assert "n=0 is invalid" in one_error(code, err) and out == ""


def test_cfg_prints_a_valid_config(tmp_path: Path) -> None:
    code, out, err = vae(["train", "latent_dim=7", "-c", "job"], tmp_path)
    assert code == 0, err
    assert "latent_dim: 7" in out
    assert not (tmp_path / "outputs").exists()


# --- 8. paths with ~, spaces and non-ASCII letters ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["/tmp/my photos", "/tmp/é/ü/日本", "/tmp/it's", "/tmp/a,b", "/tmp/[x]=y", "C:\\data\\", "true", "12"],
)
def test_a_path_reaches_the_config_as_typed(value: str) -> None:
    (arg,) = paths.quote_path_overrides([f"ckpt={value}"])
    assert OverridesParser.create().parse_overrides([arg])[0].value() == value
    assert compose_config([arg], "sample").ckpt == value


def test_tilde_is_expanded_for_every_path_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in sorted(paths.PATH_KEYS):
        (arg,) = paths.quote_path_overrides([f"{key}=~/my photos"])
        assert arg == f"{key}='{tmp_path}/my photos'"
    assert paths.quote_path_overrides(["latent_dim=8", "out=null", "ckpt=glob(*)"]) == [
        "latent_dim=8",
        "out=null",
        "ckpt=glob(*)",
    ]
    assert paths.quote_path_overrides(["-m", "ckpt=~/a,~/b c"]) == [
        "-m",
        f"ckpt={tmp_path}/a,'{tmp_path}/b c'",
    ]


def test_the_readmes_tilde_path_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = vae(["train", "dataset=image_folder", "dataset.path=~/photos"], tmp_path)
    line = one_error(code, err)  # not Hydra's LexerNoViableAltException: the path, expanded
    assert f"dataset.path={tmp_path}/photos does not exist" in line
    photos = tmp_path / "my photos é"
    photos.mkdir()
    cfg = compose_config(paths.quote_path_overrides(["dataset=image_folder", "dataset.path=~/my photos é"]))
    assert cfg.dataset.path == str(photos)


def test_a_value_the_parser_rejects_says_how_to_quote_it(tmp_path: Path) -> None:
    code, _, err = vae(["train", "dataset.label_column=é"], tmp_path)
    line = one_error(code, err)
    assert "dataset.label_column=é" in line and "quote" in line and "\"dataset.label_column='é'\"" in line
    code, _, err = vae(["train", "dataset.path=my", "photos"], tmp_path)
    assert "'photos' is not key=value" in one_error(code, err)


def test_flags_may_come_after_overrides() -> None:
    from vae_cli.cli import flags_first

    assert flags_first(["beta=4", "-m", "latent_dim=8,16", "--cfg", "job"]) == [
        "-m",
        "--cfg",
        "job",
        "beta=4",
        "latent_dim=8,16",
    ]


# --- 9. out of memory --------------------------------------------------------------------------------------

CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:114] . DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "327680000000 bytes. Error code 12 (Cannot allocate memory)"
)


def test_sample_out_of_memory_is_one_line_naming_n(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vae_cli.commands.sample as sample

    def exhausted(*args: object, **kwargs: object) -> None:
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(sample, "prior_samples", exhausted)
    code, _, err = vae(["sample", f"ckpt={run}", "n=1000000"], tmp_path)
    line = one_error(code, err)
    assert "out of memory (RAM) with n=1000000: lower n" in line
    assert not (tmp_path / "outputs").exists()  # its empty run folder is removed


def test_train_out_of_memory_is_one_line_naming_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vae_cli.commands.train as train

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(train, "train", exhausted)
    code, _, err = vae([*TRAIN, "objective=iwae", "objective.k=5000"], tmp_path)
    line = one_error(code, err)
    assert "train.batch_size=32, dataset.image_size=16, objective.k=5000" in line
    assert "lower train.batch_size or dataset.image_size or objective.k" in line


@pytest.mark.parametrize(
    ("command", "error", "expected"),
    [
        ("train", MemoryError(), "with train.batch_size=128, dataset.image_size={image_size}: lower"),
        ("evaluate", RuntimeError(CPU_OOM), "with batch_size=256, chunk (automatic), iwae_k=1000"),
        ("score", torch.OutOfMemoryError("CUDA out of memory."), "out of GPU memory with batch_size=256"),
        ("reconstruct", MemoryError(), "with n=32: lower n"),
    ],
)
def test_each_command_names_its_memory_settings(command: str, error: BaseException, expected: str) -> None:
    overrides = [] if command == "train" else ["ckpt=x"]
    cfg = compose_config(overrides, command)
    result = out_of_memory(error, command, cfg)
    image_size = cfg.dataset.image_size if command == "train" else None
    assert isinstance(result, OutOfMemory) and expected.format(image_size=image_size) in str(result)
    assert (
        out_of_memory(RuntimeError("shapes do not match"), command, compose_config(overrides, command))
        is None
    )


# --- 10. vae --version -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str, tmp_path: Path) -> None:
    code, out, _ = vae([flag], tmp_path)
    assert code == 0 and out.strip() == f"vae {importlib.metadata.version('vae-cli')}"


def test_version_without_the_distribution_reads_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from vae_cli.cli import version

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert version() == importlib.metadata.distribution("vae-cli").version


# --- 11. paths that exist but are the wrong kind -----------------------------------------------------------


def test_a_device_is_not_a_regular_file_not_missing(tmp_path: Path) -> None:
    code, _, err = vae(["sample", "ckpt=/dev/zero"], tmp_path)
    line = one_error(code, err)
    assert "/dev/zero is not a regular file" in line and "does not exist" not in line
    from vae_cli.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="is not a regular file"):
        load_checkpoint("/dev/zero")


def test_a_run_folder_without_checkpoints_exists_but_holds_none(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    (stopped / ".hydra").mkdir(parents=True)
    (stopped / "checkpoints").mkdir()
    code, _, err = vae(["evaluate", f"ckpt={stopped}"], tmp_path)
    line = one_error(code, err)
    assert f"{stopped} exists but holds no checkpoints" in line and "does not exist" not in line
    from vae_cli.api import resolve_checkpoint
    from vae_cli.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        resolve_checkpoint(stopped)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(stopped)


def test_resuming_from_a_run_folder_points_to_its_last_checkpoint(run: Path, tmp_path: Path) -> None:
    code, _, err = vae([*TRAIN, f"train.resume={run}"], tmp_path)
    assert f"is a folder, not a checkpoint file: pass {run}/checkpoints/last.ckpt" in one_error(code, err)
