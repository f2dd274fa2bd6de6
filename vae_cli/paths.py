"""The paths a command line names, checked before any work starts (and before torch loads): checkpoints,
inputs, run folders and outputs.

Nothing is overwritten: a run folder that already holds a run is refused (unless the run resumes into
it), `out=` naming another run's folder is refused, and an output file that exists is refused. A run
folder the tool made for a run that then failed before writing anything of its own is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from pathlib import Path

from vae_cli.errors import CheckpointError, ConfigError, DataError, VaeError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: `out=<path with one of these suffixes>` names the file to write, not a folder
FILE_SUFFIXES = IMAGE_SUFFIXES | {".json", ".csv", ".npy", ".npz", ".pt"}
#: the suffixes of each command's main output (`out=<file>` must have one of them): sample and reconstruct
#: write an image grid (a CSV for tabular data), evaluate the metrics JSON, score the CSV of scores, embed
#: the codes' NPZ
OUTPUT_SUFFIXES: dict[str, frozenset[str]] = {
    "sample": IMAGE_SUFFIXES | {".csv"},
    "reconstruct": IMAGE_SUFFIXES | {".csv"},
    "evaluate": frozenset({".json"}),
    "score": frozenset({".csv"}),
    "embed": frozenset({".npz"}),
}
#: what a folder that holds a run (a training run, a sweep or its job, another command's run) contains
RUN_MARKERS = ("checkpoints", ".hydra", "metrics.json", "tensorboard", "multirun.yaml", "summary.csv")
#: a name for the folder to suggest inside another run: `out=<run>/samples`
OUT_SUGGESTION = {
    "sample": "samples",
    "reconstruct": "reconstructions",
    "evaluate": "evaluation",
    "score": "scores",
    "embed": "latents",
}

#: folders this process created for a run (and the parents it created for them): removed again when the
#: run fails before writing anything of its own
CREATED: set[Path] = set()
#: folders a user named that were empty when the run started: emptied again on such a failure
NAMED_EMPTY: set[Path] = set()


def _abs(path: Path | str) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


# --- paths on the command line -----------------------------------------------------------------------------

#: keys whose values are paths: `~` is expanded and the value quoted for Hydra's override grammar
PATH_KEYS = frozenset(
    {"dataset.path", "ckpt", "out", "input", "data_dir", "train.resume", "hydra.run.dir", "hydra.sweep.dir"}
)
#: what Hydra's grammar reads as a plain string without quotes
_PLAIN = re.compile(r"[A-Za-z0-9_/+.%*@?|:-]+")
#: unquoted, these would be read as a bool, a number or null
_NOT_STRINGS = {"true", "false", "inf", "+inf", "-inf", "nan", "null"}
_OVERRIDE = re.compile(r"(\+{0,2})([A-Za-z_][\w.]*)(@[\w.]*)?=(.*)", re.DOTALL)


def hydra_quote(value: str) -> str:
    """`value` as Hydra's override grammar reads it back: as it is when it is plain, else single-quoted
    (a quote inside escaped, and the backslashes before it or at the end)."""
    if _PLAIN.fullmatch(value) and value.lower() not in _NOT_STRINGS and not _is_number(value):
        return value
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def quote_path_value(value: str, sweep: bool = False) -> str:
    """A path-valued override's value: `~` expanded, quoted where Hydra's grammar needs it. Left alone:
    null, a value already quoted, an interpolation, a sweep function (glob(...)); with `sweep` (-m), a
    comma separates paths."""
    if (
        value in ("", "null")
        or (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"")
        or "${" in value
        or re.match(r"\w+\(", value)
        or value[:1] in "[{"
    ):
        return value
    parts = value.split(",") if sweep and "," in value else [value]
    return ",".join(hydra_quote(os.path.expanduser(p) if p.startswith("~") else p) for p in parts)


def quote_path_overrides(args: list[str]) -> list[str]:
    """The command line with every path-valued override (PATH_KEYS) expanded and quoted for Hydra, so
    that `dataset.path=~/my photos` or a non-ASCII name reaches the config as the path it names."""
    sweep = "-m" in args or "--multirun" in args
    result = []
    for arg in args:
        m = _OVERRIDE.fullmatch(arg)
        if m and m.group(2) in PATH_KEYS:
            prefix, key, package, value = m.groups()
            arg = f"{prefix}{key}{package or ''}={quote_path_value(value, sweep)}"
        result.append(arg)
    return result


# --- checkpoints ------------------------------------------------------------------------------------------


def check_checkpoint_file(path: Path | str, key: str | None = None) -> Path:
    """`path` as a checkpoint file: it exists, is a regular file and a PyTorch zip archive (4 bytes are
    read). `key`: the setting that named it (train.resume), for the message."""
    p = Path(path).expanduser()
    what = f"{key}={p}" if key else f"checkpoint {p}"
    if not p.exists():
        raise CheckpointError(f"{what} does not exist; pass a .ckpt file from a run's checkpoints/ folder")
    if p.is_dir():
        order = _candidates(p)
        if key == "train.resume":  # a run resumes from its last checkpoint
            order = (p / "checkpoints" / "last.ckpt", p / "last.ckpt")
        inside = next((c for c in order if c.is_file()), None)
        hint = f"pass {inside}" if inside else "it holds no checkpoints; pass a .ckpt file"
        raise CheckpointError(f"{what} is a folder, not a checkpoint file: {hint}")
    if not stat.S_ISREG(p.stat().st_mode):
        raise CheckpointError(
            f"{what} is not a regular file (a device, pipe or socket): pass a .ckpt file from a run's "
            f"checkpoints/ folder"
        )
    try:
        with open(p, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
    except OSError as e:
        raise CheckpointError(f"cannot read {what}: {e.strerror}") from None
    if not is_zip:
        raise CheckpointError(
            f"{p} is not a vae checkpoint (not a PyTorch zip archive); pass a .ckpt file "
            f"from a run's checkpoints/ folder"
        )
    return p


#: where `vae train train.background=true` puts the background model, inside the training run folder: a
#: run folder of its own (checkpoints/, tensorboard/, metrics.json), which `ckpt=` also takes
BACKGROUND = "background"


def background_dir(run_dir: Path) -> Path:
    """The background model's folder in a training run folder (vae score score=likelihood_ratio)."""
    return Path(run_dir) / BACKGROUND


def _candidates(folder: Path) -> tuple[Path, ...]:
    return (
        folder / "checkpoints" / "best.ckpt",
        folder / "checkpoints" / "last.ckpt",
        folder / "best.ckpt",
        folder / "last.ckpt",
    )


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given; a folder means its checkpoints/best.ckpt, else checkpoints/last.ckpt (a
    checkpoints/ folder itself works too). Raises CheckpointError saying what is wrong."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in _candidates(p):
            if candidate.is_file():
                return candidate
        why = (
            "its training stopped before it wrote one"
            if (p / ".hydra").is_dir() or (p / "checkpoints").is_dir()
            else "is it a training run?"
        )
        raise CheckpointError(
            f"{p} exists but holds no checkpoints (no checkpoints/best.ckpt or checkpoints/last.ckpt): {why}; "
            f"pass a .ckpt file or a training run folder"
        )
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a .ckpt file or a training run folder")
    return check_checkpoint_file(p)


# --- inputs -----------------------------------------------------------------------------------------------


def check_input(value: str, key: str, what: str) -> None:
    """An input path (input=, dataset.path=) that must exist."""
    if not Path(value).expanduser().exists():
        raise DataError(f"{key}={value} does not exist: pass {what}")


def check_folder(value: str | None, key: str, source: str = "") -> None:
    """A path that must be a folder when it exists (data_dir)."""
    if value is None:
        return
    p = Path(str(value)).expanduser()
    if p.exists() and not p.is_dir():
        where = f" (from {source})" if source else ""
        raise DataError(f"{key}={p}{where} is a file: point it at a folder")


# --- run folders ------------------------------------------------------------------------------------------


def run_contents(folder: Path) -> list[str]:
    """What marks `folder` as holding a run: its checkpoints/, .hydra/, metrics.json, ... and *.log files."""
    if not folder.is_dir():
        return []
    found = [f"{m}/" if (folder / m).is_dir() else m for m in RUN_MARKERS if (folder / m).exists()]
    with contextlib.suppress(OSError):
        found += sorted(p.name for p in folder.iterdir() if p.suffix == ".log" and p.is_file())
    return found


def _file_on_the_way(folder: Path) -> Path | None:
    """The first existing path along `folder` (itself or an ancestor) that is not a folder."""
    for p in [folder, *folder.parents]:
        if p.exists():
            return None if p.is_dir() else p
    return None


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        _abs(path).resolve().relative_to(_abs(folder).resolve())
        return True
    except ValueError:
        return False


def check_run_dir(folder: Path | str, key: str = "hydra.run.dir", resume: str | None = None) -> Path:
    """A run folder named explicitly: not a file, and not a folder holding another run, unless `resume`
    (train.resume) points inside it: that run continues there."""
    folder = Path(folder).expanduser()
    blocker = _file_on_the_way(folder)
    if blocker is not None:
        what = "is a file" if blocker == folder else f"cannot be created: {blocker} is a file"
        raise ConfigError(f"{key}={folder} {what}: pass a folder")
    found = run_contents(folder)
    if not found or (resume and _is_inside(Path(resume), folder)):
        return folder
    if key == "hydra.sweep.dir":
        raise ConfigError(
            f"{key}={folder} already holds a sweep or a run ({', '.join(found)}), which a new sweep would "
            f"overwrite: pick a new folder, or leave out {key} for a fresh one"
        )
    last = folder / "checkpoints" / "last.ckpt"
    resume_hint = (
        f"to continue that run, add train.resume={last} (e.g. vae train train.resume={last}); otherwise "
        if last.is_file()
        else ""
    )
    raise ConfigError(
        f"{key}={folder} already holds a run ({', '.join(found)}), which a new run would overwrite: "
        f"{resume_hint}pick a new folder, or leave out {key} for a fresh one"
    )


def note_named_folder(folder: Path | str) -> None:
    """Remember whether a folder the user named existed (and was empty) before the run made it."""
    path = _abs(folder)
    if not path.exists():
        CREATED.update(_missing_chain(path))
    elif path.is_dir() and not any(path.iterdir()):
        NAMED_EMPTY.add(path)


def _missing_chain(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet."""
    chain = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        chain.append(p)
    return chain


def reserve_folder(base: Path) -> Path:
    """Create `base`, or `base_1`, `base_2`, ... if taken; mkdir is atomic, so two runs started in the
    same second never share a folder."""
    created_parents = _missing_chain(_abs(base.parent))
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaeError(
            f"cannot create the output folder {base.parent}: {e.strerror}; "
            f"choose another with hydra.run.dir=<path>"
        ) from None
    CREATED.update(created_parents)
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            CREATED.add(_abs(candidate))
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise VaeError(
                f"cannot create the output folder {candidate}: {e.strerror}; "
                f"choose another with hydra.run.dir=<path>"
            ) from None
    raise VaeError(f"too many runs in {base.parent} this second")


def _is_bare(folder: Path) -> bool:
    """Only what Hydra writes when a run starts: .hydra/ and the log."""
    return all(
        (p.name == ".hydra" and p.is_dir()) or (p.suffix == ".log" and p.is_file()) for p in folder.iterdir()
    )


def remove_bare_run_dir(folder: Path | str) -> bool:
    """After a run failed with a user error: remove its folder when this process made it and it holds only
    .hydra/ and a log (a folder the user named, empty before, is emptied again). True when removed."""
    path = _abs(folder)
    made, named = path in CREATED, path in NAMED_EMPTY
    try:
        if not (made or named) or not path.is_dir() or not _is_bare(path):
            return False
        for p in path.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if made:
            path.rmdir()
            for parent in path.parents:  # outputs/<command>/<date>/ when this run made them
                if parent not in CREATED or any(parent.iterdir()):
                    break
                parent.rmdir()
    except OSError:
        return False
    return True


# --- outputs ----------------------------------------------------------------------------------------------


def is_output_file(out: str | None) -> bool:
    """`out=` names a file to write (it has a file suffix and is not an existing folder)."""
    if not out:
        return False
    p = Path(str(out)).expanduser()
    return p.suffix.lower() in FILE_SUFFIXES and not p.is_dir()


def inside_a_run(folder: Path | str) -> bool:
    """`folder` lies inside a training run, a sweep or another command's run (an ancestor holds .hydra/,
    checkpoints/ or multirun.yaml)."""
    return any(
        (p / ".hydra").is_dir() or (p / "checkpoints").is_dir() or (p / "multirun.yaml").is_file()
        for p in _abs(folder).parents
    )


def out_is_run_folder(out: str | None) -> bool:
    """Whether Hydra's run folder (its log and .hydra/) is `out=` itself: when it names a folder that is
    not inside another run. A file (out=samples.png), or a folder inside another run (out=<run>/samples,
    where a .hydra/ would make `vae report` count it as a sweep job), keep Hydra's default folder."""
    return bool(out) and not is_output_file(out) and not inside_a_run(Path(str(out)).expanduser())


class Output:
    """Where a command writes: a folder, or the file `out=` named (its other outputs go beside it, with
    the same stem and their own suffix). `.path(default_name)` is each output's path; an existing file is
    never overwritten."""

    def __init__(self, folder: Path, file: Path | None = None) -> None:
        self.folder = folder
        self.file = file
        self._given: set[Path] = set()

    def __repr__(self) -> str:
        return f"Output({self.file or self.folder})"

    def path(self, default_name: str) -> Path:
        """The path of the output the command calls `default_name` (e.g. "samples.png"). With `out=<file>`,
        the first output asked for (each command's main one) is that file; the others go beside it."""
        name = Path(default_name)
        if self.file is None:
            target = self.folder / name
        elif not self._given:
            if not _same_kind(name.suffix, self.file.suffix):
                raise ConfigError(
                    f"out={self.file}: the main output here is a {name.suffix or 'folder'} ({name.name}): name "
                    f"a {name.suffix} file, or a folder"
                )
            target = self.file
        else:
            target = self.file.with_suffix(name.suffix)
            if target in self._given or _same_kind(name.suffix, self.file.suffix):
                target = self.file.with_name(f"{self.file.stem}_{name.stem}{name.suffix}")
        if target not in self._given and (target.exists() or target.is_symlink()):
            raise ConfigError(
                f"{target} already exists and outputs are never overwritten: choose another out=<folder or "
                f"file>, or move it away"
            )
        self._given.add(target)
        return target

    __truediv__ = path


def _same_kind(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or (a in IMAGE_SUFFIXES and b in IMAGE_SUFFIXES)


def check_out(out: str, command: str, key: str = "out") -> None:
    """`out=`: a new file name with a suffix of the command's main output, or a folder that holds no
    other run. `key`: the setting that named it (out, or hydra.run.dir)."""
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        what = "already exists and outputs are never overwritten: pick a new file name, or a folder"
        raise ConfigError(f"{key}={out} {what if key == 'out' else 'is a file: pass a folder'}")
    blocker = _file_on_the_way(p.parent)
    if blocker is not None:
        raise ConfigError(f"{key}={out} cannot be written: {blocker} is a file, not a folder")
    if key == "out" and is_output_file(out):
        allowed = OUTPUT_SUFFIXES.get(command)
        if allowed is not None and p.suffix.lower() not in allowed:
            kinds = sorted(allowed - IMAGE_SUFFIXES) + (
                ["an image (.png, .jpg, ...)"] if allowed & IMAGE_SUFFIXES else []
            )
            raise ConfigError(
                f"out={out}: the main output of vae {command} is {' or '.join(kinds)}: name such a file (the "
                f"other outputs go beside it), or a folder"
            )
        return
    found = run_contents(p)
    if found:
        inside = p / OUT_SUGGESTION.get(command, "outputs")
        raise ConfigError(
            f"{key}={out} holds another run ({', '.join(found)}), whose files would be overwritten: write "
            f"into a new folder, e.g. out={inside}"
        )
