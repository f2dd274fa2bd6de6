"""Nothing is overwritten and nothing is left behind (issue 14): a run folder that holds a run is
refused, `out=` naming another run's folder is refused, `out=<file>` is the file to write, arguments are
checked before torch loads and a failed run's empty folder is removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, TINY_SYNTHETIC, run_vae
from tests.helpers.cli import one_error, vae
from tests.helpers.data import TINY_CONV_TRAIN
from vae_cli import paths
from vae_cli.errors import ConfigError

TRAIN = ["train", *TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run(trained_run: Path) -> Path:
    """The session's tiny training run (`trained_run`, tests/conftest.py): never changed by these tests
    (copy it to change it)."""
    return trained_run


# --- 1. training into a folder that holds a run ------------------------------------------------------------


def test_training_into_a_folder_holding_a_run_is_refused_before_anything_is_written(
    run: Path, tmp_path: Path
) -> None:
    before = snapshot(run)
    code, _, err = vae([*TRAIN, f"hydra.run.dir={run}"], tmp_path)
    line = one_error(code, err)
    assert f"hydra.run.dir={run} already holds a run" in line
    assert f"vae train train.resume={run}/checkpoints/last.ckpt" in line and "new folder" in line
    assert snapshot(run) == before  # not a byte changed: no .hydra/, no log appended
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("marker", ["checkpoints/", "metrics.json", "tensorboard/", ".hydra/", "train.log"])
def test_each_trace_of_a_run_marks_the_folder_as_taken(marker: str, tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / marker.rstrip("/")).mkdir() if marker.endswith("/") else (folder / marker).write_text("x")
    code, _, err = vae([*TRAIN, f"hydra.run.dir={folder}"], tmp_path)
    assert marker in one_error(code, err)
    assert sorted(p.name for p in folder.iterdir()) == [marker.rstrip("/")]


def test_the_callback_refuses_before_hydra_creates_the_folder(run: Path) -> None:
    """UniqueRunDir.on_run_start, which Hydra calls before it makes the run folder and writes .hydra/, is
    the check for every way Hydra is started (not only `vae train`)."""
    from hydra import compose, initialize_config_dir

    from vae_cli.cli import config_dir
    from vae_cli.config import register_configs
    from vae_cli.sweep.callbacks import UniqueRunDir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra.run.dir={run}"], return_hydra_config=True)
        with pytest.raises(ConfigError, match="already holds a run"):
            UniqueRunDir().on_run_start(config=cfg)
        resuming = compose(
            "train",
            overrides=[f"hydra.run.dir={run}", f"train.resume={run}/checkpoints/last.ckpt"],
            return_hydra_config=True,
        )
        UniqueRunDir().on_run_start(config=resuming)  # the run continues in its own folder
        sweep = compose("train", overrides=[f"hydra.sweep.dir={run}"], return_hydra_config=True)
        with pytest.raises(ConfigError, match="hydra.sweep.dir=.* already holds"):
            UniqueRunDir().on_multirun_start(config=sweep)


def test_resuming_into_the_same_folder_continues_the_run(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = copy / "checkpoints" / "last.ckpt"
    result = run_vae(
        [*TINY_CONV_TRAIN, "train.epochs=2", f"train.resume={last}", f"hydra.run.dir={copy}"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((copy / "metrics.json").read_text())["epochs"] == 2


def test_a_sweep_folder_holding_a_sweep_is_refused(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    code, _, err = vae([*TRAIN, "-m", "latent_dim=2,3", f"hydra.sweep.dir={sweep}"], tmp_path)
    line = one_error(code, err)
    assert f"hydra.sweep.dir={sweep} already holds" in line and "multirun.yaml" in line
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "multirun.yaml"]


# --- 2. out= naming another run's folder -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "extra", "suggested"),
    [
        ("sample", [], "samples"),
        ("reconstruct", [], "reconstructions"),
        ("evaluate", ["iwae_k=2"], "evaluation"),
        ("score", [], "scores"),
    ],
)
def test_out_naming_a_training_run_is_refused(
    run: Path, tmp_path: Path, command: str, extra: list[str], suggested: str
) -> None:
    before = snapshot(run)
    code, _, err = vae([command, f"ckpt={run}", f"out={run}", *extra], tmp_path)
    line = one_error(code, err)
    assert f"out={run} holds another run" in line and f"out={run / suggested}" in line
    assert snapshot(run) == before  # its .hydra/ (beta, latent_dim for vae report) is intact
    assert not (tmp_path / "outputs").exists()


def test_out_naming_a_sweep_job_or_another_commands_run_is_refused(run: Path, tmp_path: Path) -> None:
    job = tmp_path / "sweep" / "3"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- beta=4\n")
    code, _, err = vae(["sample", f"ckpt={run}", f"out={job}"], tmp_path)
    assert "holds another run (.hydra/)" in one_error(code, err)
    assert (job / ".hydra" / "overrides.yaml").read_text() == "- beta=4\n"


def test_output_dir_refuses_another_run_but_takes_its_own_run_folder(run: Path, tmp_path: Path) -> None:
    from vae_cli.commands.common import output_dir

    with pytest.raises(ConfigError, match="holds another run"):
        output_dir(OmegaConf.create({"out": str(run)}), tmp_path / "hydra_run")
    own = tmp_path / "own"
    (own / ".hydra").mkdir(parents=True)  # Hydra's own, written just before the task
    assert output_dir(OmegaConf.create({"out": str(own)}), own).folder == own
    fresh = output_dir(OmegaConf.create({"out": str(tmp_path / "new" / "folder")}), tmp_path / "x")
    assert fresh.folder.is_dir() and fresh.path("samples.png") == tmp_path / "new" / "folder" / "samples.png"


def test_the_suggested_folder_inside_a_run_gets_the_outputs_but_not_hydras_files(
    run: Path, tmp_path: Path
) -> None:
    """out=<run>/samples: the outputs go there; Hydra's .hydra/ and log go to outputs/sample/..., so that
    `vae report` never takes the folder for a sweep job."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = snapshot(copy)
    code, _, err = vae(["sample", f"ckpt={copy}", f"out={copy}/samples", "n=4"], tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in (copy / "samples").iterdir()) == ["samples.png"]
    assert {k: v for k, v in snapshot(copy).items() if not k.startswith("samples/")} == before
    (hydra_run,) = (tmp_path / "outputs" / "sample").glob("*/*")
    assert (hydra_run / ".hydra").is_dir()


def test_a_new_or_empty_out_folder_is_used(run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = vae(["sample", f"ckpt={run}", f"out={empty}", "n=4"], tmp_path)
    assert code == 0, err
    assert (empty / "samples.png").is_file() and (empty / ".hydra").is_dir()


# --- 3. out=<file> -----------------------------------------------------------------------------------------


def test_out_naming_a_file_writes_that_file_and_its_others_beside_it(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "my outputs é" / "grid.png"  # a space and a non-ASCII letter, as typed
    code, _, err = vae(["sample", f"ckpt={run}", f"out={target}", "n=4", "save_tensor=true"], tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in target.parent.iterdir()) == ["grid.png", "grid.pt"]
    (hydra_run,) = (tmp_path / "outputs" / "sample").glob("*/*")  # the log and .hydra/ go there
    assert (hydra_run / ".hydra").is_dir() and (hydra_run / "sample.log").is_file()

    code, _, err = vae(
        ["sample", f"ckpt={run}", "mode=traverse", "steps=3", f"out={tmp_path / 't.png'}"], tmp_path
    )
    assert code == 0, err
    assert (tmp_path / "t.png").is_file() and (tmp_path / "t.json").is_file()
    assert not (tmp_path / "t.png").is_dir()


def test_the_output_helper_names_each_output_after_the_file() -> None:
    out = paths.Output(Path("/x"), Path("/x/scores.csv"))
    assert out.path("scores.csv") == Path("/x/scores.csv")
    assert out.path("extremes.png") == Path("/x/scores.png")
    assert out.path("score_metrics.json") == Path("/x/scores.json")
    evaluate = paths.Output(Path("/x"), Path("/x/m.json"))
    assert evaluate.path("metrics_test.json") == Path("/x/m.json")
    sample = paths.Output(Path("/x"), Path("/x/s.jpg"))
    assert sample.path("samples.png") == Path("/x/s.jpg")  # any image suffix
    assert sample.path("samples.pt") == Path("/x/s.pt") and sample.path("traverse.json") == Path("/x/s.json")
    assert sample.path("kl.png") == Path("/x/s_kl.png")  # a second picture never replaces the first
    folder = paths.Output(Path("/x"))
    assert folder.path("samples.png") == Path("/x/samples.png") and folder / "a.json" == Path("/x/a.json")
    with pytest.raises(ConfigError, match=r"main output here is a \.png"):
        paths.Output(Path("/x"), Path("/x/s.csv")).path("samples.png")


def test_an_existing_output_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "s.pt").write_bytes(b"mine")
    out = paths.Output(tmp_path, tmp_path / "s.png")
    out.path("samples.png")
    with pytest.raises(ConfigError, match=f"{tmp_path / 's.pt'} already exists"):
        out.path("samples.pt")
    (tmp_path / "samples.png").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="samples.png already exists"):
        paths.Output(tmp_path).path("samples.png")
    assert (tmp_path / "s.pt").read_bytes() == b"mine"


def test_the_run_folder_follows_out_only_when_out_is_a_folder(tmp_path: Path) -> None:
    from vae_cli.config.compose import compose_run

    _, hydra_node = compose_run(["ckpt=x", f"out={tmp_path / 'samples.png'}"], "sample")
    assert hydra_node.run_dir.startswith("outputs/sample/")
    _, hydra_node = compose_run(["ckpt=x", f"out={tmp_path / 'folder'}"], "sample")
    assert hydra_node.run_dir == str(tmp_path / "folder")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["sample", "out={file}"], "out={file} already exists"),
        (["evaluate", "out={file}"], "out={file} already exists"),
        (["sample", "out={file}/x.png"], "is a file, not a folder"),
        (["sample", "hydra.run.dir={file}"], "hydra.run.dir={file} is a file"),
        (["score", "out={tmp}/s.png"], "main output of vae score is .csv"),
        (["evaluate", "out={tmp}/m.png"], "main output of vae evaluate is .json"),
    ],
)
def test_out_or_a_run_folder_naming_an_existing_file_is_one_line(
    run: Path, tmp_path: Path, args: list[str], phrase: str
) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    fill = {"file": file, "tmp": tmp_path}
    code, _, err = vae([args[0], f"ckpt={run}", *(a.format(**fill) for a in args[1:])], tmp_path)
    assert phrase.format(**fill) in one_error(code, err)
    assert file.read_text() == "mine\n"


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_training_into_a_file_is_one_line(key: str, tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    multirun = ["-m"] if key == "hydra.sweep.dir" else []
    code, _, err = vae([*TRAIN, *multirun, f"{key}={file}"], tmp_path)
    assert f"{key}={file} is a file" in one_error(code, err)
    assert file.read_text() == "mine\n"


# --- 7. arguments first, nothing created on error ----------------------------------------------------------


def test_a_missing_checkpoint_fails_before_torch_loads_and_leaves_nothing(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from vae_cli.cli import main\n"
        "try:\n"
        "    main(['sample', 'ckpt=/nonexistent'])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules, f'{time.perf_counter() - t:.2f}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    exit_code, torch_loaded, seconds = result.stdout.split()
    assert (exit_code, torch_loaded) == ("2", "False"), result.stderr
    assert "checkpoint /nonexistent does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/sample/<date>/<time>
    print(f"time to the error line: {seconds} s")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (
            ["reconstruct", "ckpt={run}", "input={tmp}/no/such/folder"],
            "input={tmp}/no/such/folder does not exist",
        ),
        (["score", "ckpt={run}", "input={tmp}/nothing.csv"], "input={tmp}/nothing.csv does not exist"),
        (["sample", "ckpt={run}", "data_dir={run}/metrics.json"], "data_dir={run}/metrics.json is a file"),
        (
            ["train", "dataset=image_folder", "dataset.path={tmp}/photos"],
            "dataset.path={tmp}/photos does not exist",
        ),
        (["train", "train.resume={tmp}/no.ckpt"], "train.resume={tmp}/no.ckpt does not exist"),
        (["sample", "ckpt={run}", "n=0"], "n=0 is invalid"),
        (["evaluate", "ckpt={run}", "mode=x"], "mode is not a key of vae evaluate"),
    ],
)
def test_cheap_facts_are_checked_before_any_folder_is_made(
    run: Path, tmp_path: Path, args: list[str], phrase: str
) -> None:
    fill = {"run": run, "tmp": tmp_path}
    code, _, err = vae([a.format(**fill) for a in args], tmp_path)
    assert phrase.format(**fill) in one_error(code, err)
    assert not (tmp_path / "outputs").exists()


def test_vae_data_dir_pointing_at_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "data.txt"
    file.write_text("not a folder\n")
    monkeypatch.setenv("VAE_DATA_DIR", str(file))
    code, _, err = vae([*TRAIN], tmp_path)
    assert f"data_dir={file} (from VAE_DATA_DIR) is a file" in one_error(code, err)
    assert not (tmp_path / "outputs").exists()


def test_a_run_that_fails_before_writing_anything_leaves_no_folder(run: Path, tmp_path: Path) -> None:
    """A truncated checkpoint passes the cheap checks (it is a zip archive) and fails when torch reads it:
    the run folder Hydra had made by then (only .hydra/ and the log) is removed."""
    truncated = tmp_path / "bad.ckpt"
    truncated.write_bytes((run / "checkpoints" / "best.ckpt").read_bytes()[:2000])
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = vae(["sample", f"ckpt={truncated}"], work)
    assert "not a readable vae checkpoint" in one_error(code, err)
    assert list(work.iterdir()) == []


def test_a_failed_run_keeps_what_it_did_not_make(tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.mkdir()
    paths.note_named_folder(named)  # empty before the run: emptied again, kept
    (named / ".hydra").mkdir()
    (named / "sample.log").write_text("log\n")
    assert paths.remove_bare_run_dir(named) and named.is_dir() and not any(named.iterdir())

    made = paths.reserve_folder(tmp_path / "outputs" / "day" / "time")
    (made / ".hydra").mkdir()
    (made / "samples.png").write_bytes(b"an output")  # it wrote something of its own: kept
    assert not paths.remove_bare_run_dir(made) and (made / "samples.png").is_file()
    (made / "samples.png").unlink()
    assert paths.remove_bare_run_dir(made) and not (tmp_path / "outputs").exists()

    other = tmp_path / "someone_elses"
    (other / ".hydra").mkdir(parents=True)
    assert not paths.remove_bare_run_dir(other) and (other / ".hydra").is_dir()


def test_checkpoint_commands_get_a_folder_of_their_own(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs started in the same second never share outputs/<command>/<date>/<time>."""
    from vae_cli.cli import check_command_line

    monkeypatch.chdir(tmp_path)
    first = check_command_line("sample", "sample", [f"ckpt={run}"])
    second = check_command_line("sample", "sample", [f"ckpt={run}"])
    dirs = [a.split("=", 1)[1] for a in (first[-1], second[-1])]
    assert first[-1].startswith("hydra.run.dir=") and dirs[0] != dirs[1]
    assert all(Path(d).is_dir() for d in dirs)
