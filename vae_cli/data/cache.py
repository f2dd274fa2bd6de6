"""The decoded-image cache of the on-disk image datasets (dataset=image_folder, dataset=celeba).

The first run at a given image size, crop and channels decodes every image once and writes them, uint8
(N, C, H, W), into one `.npy` file with a JSON manifest of what it was built from (the file list with
sizes and modification times, as a hash; the settings; the format version). Later runs, and every job
of a sweep, read that file instead of decoding: whole into memory when it fits (the in-memory batch
path), else memory-mapped. The rows are the decoded images of the files in the dataset's order, so the
splits, the batches and the pixels are those of the decode path.

Where: `<images>/.vae_cache/` (a hidden folder, which no image reader enters) when that is writable,
else `$VAE_CACHE_DIR` (default `~/.cache/vae`) in a folder named after the images' path;
`dataset.cache_dir` puts it in one place instead. A cache whose files, settings or format differ is
rebuilt, with a line in the log saying why; a truncated or corrupt one too, with a warning.

Writes never leave a half-written cache: the array goes to a temporary file in the same folder, is
fsynced and renamed over the old one (`vae_cli.io.write_atomically`), and its manifest (which is what
makes it valid) is removed first and written last. Builders of one cache take its lock file in turn, so
of two processes (two jobs of a sweep) one decodes and the other reads what it wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vae_cli.errors import DataError, VaeError
from vae_cli.io import write_atomically, write_json

log = logging.getLogger("vae")

FORMAT_VERSION = 1
CACHE_FOLDER = ".vae_cache"
DEFAULT_CACHE_ROOT = "~/.cache/vae"
#: fewer images decode faster in this process than with worker start-up (as in readers.decode_all)
PARALLEL_DECODE_FROM = 2000
#: the settings a cache was built for; another value of any of them is another cache
SETTINGS = ("format", "dataset", "channels", "image_size", "crop")
OFF = "switch the cache off with dataset.cache=false"

#: caches this process rebuilt for dataset.cache=rebuild: the jobs of a sweep run in one process rebuild
#: once, then read what the first wrote
_REBUILT: set[Path] = set()


@dataclass(frozen=True)
class CacheRequest:
    """What a cache is built from: image files (in the dataset's order) decoded to `shape`."""

    dataset: str  # image_folder | celeba
    root: Path  # the images' folder: the manifest names files relative to it
    home: Path  # the folder next to the images that holds .vae_cache/
    files: list[Path]
    shape: tuple[int, int, int]  # (C, H, W)
    crop: int | None  # celeba's centre crop; None where the dataset has none
    decode: Callable[[Path], torch.Tensor | None]  # uint8 (C, H, W), None for an unreadable file

    @property
    def name(self) -> str:
        c, h, w = self.shape
        crop = "" if self.crop is None else f"-crop{self.crop}"
        return f"{self.dataset}-{c}x{h}x{w}{crop}"

    def manifest(self) -> dict:
        c, h, _ = self.shape
        return {
            "format": FORMAT_VERSION,
            "dataset": self.dataset,
            "channels": c,
            "image_size": h,
            "crop": self.crop,
            "images": len(self.files),
            "fingerprint": fingerprint(self.root, self.files),
        }


@dataclass(frozen=True)
class Invalid:
    """Why a cache file cannot be used: stale (other files or settings), or broken (truncated, corrupt)."""

    why: str
    broken: bool = False


@dataclass(frozen=True)
class Cached:
    """A valid cache file: one row per file of the request, the unreadable files' rows left zero."""

    path: Path
    images: int
    unreadable: frozenset[int]

    @property
    def readable(self) -> list[bool]:
        return [i not in self.unreadable for i in range(self.images)]

    @property
    def rows(self) -> torch.Tensor:
        """The rows of the readable files, in order."""
        return torch.tensor([i for i in range(self.images) if i not in self.unreadable], dtype=torch.long)

    def load(self) -> torch.Tensor:
        """The readable files' images, read whole into memory: uint8 (N, C, H, W)."""
        array = np.load(self.path, mmap_mode="r")
        kept = np.array(array) if not self.unreadable else array[self.rows.numpy()]
        return torch.from_numpy(kept)

    def split(self, labels: torch.Tensor | None, names: list[str]) -> CachedImages:
        """The readable files' images as a split read through a memory map (for data too big to hold)."""
        return CachedImages(self.path, self.rows, labels, names)


class CachedImages(Dataset):
    """A split read from a cache file through a memory map, row by row (in DataLoader workers). Each
    process maps the file on first use: the map itself is never pickled to the workers."""

    in_memory = False
    #: rows are copied out of the page cache, not decoded: DataLoader workers would only add the transfer
    memory_mapped = True
    factors = None

    def __init__(self, path: Path, rows: torch.Tensor, labels: torch.Tensor | None, names: list[str]) -> None:
        self.path, self.rows, self.labels, self.names = path, rows, labels, list(names)
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array()[int(self.rows[i])]))

    def __getitems__(self, index: list[int]) -> list[torch.Tensor]:
        # one read for a whole batch: the DataLoader's fetcher calls this instead of __getitem__ per row
        return list(self.take(index))

    def subset(self, index: torch.Tensor) -> CachedImages:
        rows = index.tolist()
        labels = None if self.labels is None else self.labels[index]
        return CachedImages(self.path, self.rows[index], labels, [self.names[i] for i in rows])

    def take(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        rows = self.rows[torch.as_tensor(index, dtype=torch.long)].numpy()
        return torch.from_numpy(self.array()[rows])


def cached_images(request: CacheRequest, mode: str, cache_dir: str | None) -> Cached | None:
    """The cache of `request`: read when valid, else (or with mode=rebuild) built. None when it cannot
    be written anywhere automatic (a warning says so, and the caller decodes as without a cache); an
    unwritable dataset.cache_dir is a DataError."""
    want = request.manifest()
    folders = cache_folders(request.home, cache_dir)
    why = "there is no cache yet"
    for folder in folders:
        path = folder / f"{request.name}.npy"
        if mode == "rebuild" and path not in _REBUILT:
            why = "dataset.cache=rebuild"
            break
        found = check_cache(path, want)
        if isinstance(found, Cached):
            log.info("%s: read the decoded images from the cache %s", request.dataset, path)
            return found
        if found is not None:
            if found.broken:
                log.warning(
                    "%s: the cache %s is broken (%s): rebuilding it", request.dataset, path, found.why
                )
            why = found.why
            break
    target = writable_folder(folders, cache_dir is not None, request.name, why)
    if target is None:
        return None
    return build_cache(target / f"{request.name}.npy", request, want, why, mode)


def cache_folders(home: Path, cache_dir: str | None) -> list[Path]:
    """Where a cache is looked for and written, in order: dataset.cache_dir alone when set, else next to
    the images, then the user's cache folder (in a sub-folder named after the images' path)."""
    if cache_dir:
        return [Path(cache_dir).expanduser()]
    home = home.resolve()
    root = Path(os.environ.get("VAE_CACHE_DIR") or DEFAULT_CACHE_ROOT).expanduser()
    tag = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return [home / CACHE_FOLDER, root / f"{home.name}-{tag}"]


def fingerprint(root: Path, files: list[Path]) -> str:
    """A hash of the files' names (relative to root), sizes and modification times, in order."""
    digest = hashlib.sha256()
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            raise DataError(f"cannot read {f}: {e.strerror}; is the image folder complete?") from None
        digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_cache(path: Path, want: dict) -> Cached | Invalid | None:
    """The cache at `path` when it is valid for `want`, else why not; None when there is none."""
    manifest_path = path.with_suffix(".json")
    if not manifest_path.exists():
        # an interrupted build, or another run rebuilding it right now (it removes the manifest first)
        return Invalid("its manifest is missing") if path.exists() else None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return Invalid(f"its manifest {manifest_path.name} is unreadable ({e})", broken=True)
    if not isinstance(manifest, dict):
        return Invalid(f"its manifest {manifest_path.name} is not a manifest", broken=True)
    stale = staleness(manifest, want)
    if stale:
        return Invalid(stale)
    size = want["image_size"]
    broken = array_problem(path, (want["images"], want["channels"], size, size))
    if broken:
        return Invalid(broken, broken=True)
    return Cached(path, want["images"], frozenset(manifest.get("unreadable", [])))


def staleness(manifest: dict, want: dict) -> str | None:
    """Why a cache built as `manifest` says is not the cache `want` describes, or None."""
    other = [k for k in SETTINGS if manifest.get(k) != want[k]]
    if other:
        then = ", ".join(f"{k}={manifest.get(k)}" for k in other)
        return f"it was built for other settings ({then})"
    if manifest.get("images") != want["images"]:
        return f"the files changed: {want['images']} images now, {manifest.get('images')} when it was built"
    if manifest.get("fingerprint") != want["fingerprint"]:
        return "files were replaced or modified since it was built (their sizes or times differ)"
    return None


def array_problem(path: Path, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the .npy file at `path` for uint8 images of `shape` (missing, truncated,
    another shape), or None."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found, fortran, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError) as e:
        return f"the cache file is missing, unreadable or corrupt ({e})"
    if tuple(found) != shape or dtype != np.uint8 or fortran:
        return f"the cache file holds {dtype} {tuple(found)}, not uint8 {shape}"
    expected = offset + math.prod(shape)
    if size != expected:
        return f"the cache file is truncated or corrupt ({size} bytes, {expected} expected)"
    return None


def writable_folder(folders: list[Path], chosen: bool, name: str, why: str) -> Path | None:
    """The first folder a cache can be written to. None (with a warning) when no automatic folder is
    writable; a DataError when dataset.cache_dir (`chosen`) is not."""
    for folder in folders:
        if can_write(folder):
            return folder
    if chosen:
        raise DataError(
            f"cannot write the decoded-image cache {name}.npy into dataset.cache_dir={folders[0]} ({why}): "
            f"the folder is not writable; choose a writable dataset.cache_dir, or {OFF}"
        )
    log.warning(
        "cannot write the decoded-image cache %s.npy (%s): neither %s is writable; decoding the images "
        "without it (set dataset.cache_dir=<writable folder>, or %s)",
        name,
        why,
        " nor ".join(str(f) for f in folders),
        OFF,
    )
    return None


def can_write(folder: Path) -> bool:
    """Whether a file can be created in `folder` (made when missing): tried, since permissions alone
    do not say (a read-only mount, root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def build_cache(path: Path, request: CacheRequest, want: dict, why: str, mode: str) -> Cached:
    """Decode every file of `request` into the cache at `path`, unless another process (holding the lock
    first) has just written a valid one: that one is read instead."""
    waited_from = time.time()
    with cache_lock(path):
        found = check_cache(path, want)
        if isinstance(found, Cached) and (mode != "rebuild" or built_since(path, waited_from)):
            log.info(
                "%s: read the decoded images from the cache %s (built by another run)", request.dataset, path
            )
            return found
        log.info(
            "%s: decoding %d images into the cache %s (%s)", request.dataset, len(request.files), path, why
        )
        started = time.perf_counter()
        try:
            unreadable = write_cache(path, request, want)
        except OSError as e:
            raise DataError(
                f"cannot write the decoded-image cache {path}: {e.strerror or e}; free some space, choose "
                f"another folder with dataset.cache_dir=<folder>, or {OFF}"
            ) from None
    if mode == "rebuild":
        _REBUILT.add(path)
    log.info(
        "%s: cached %d images (%.1f MiB) in %.1f s",
        request.dataset,
        len(request.files),
        path.stat().st_size / 2**20,
        time.perf_counter() - started,
    )
    return Cached(path, len(request.files), frozenset(unreadable))


def built_since(path: Path, moment: float) -> bool:
    try:
        return path.with_suffix(".json").stat().st_mtime >= moment
    except OSError:
        return False


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `<cache>.lock` for building one cache (no lock where fcntl is missing: the
    atomic rename still keeps every file whole)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_cache(path: Path, request: CacheRequest, want: dict) -> list[int]:
    """Write the array, then the manifest; returns the rows of the files that could not be decoded."""
    path.with_suffix(".json").unlink(missing_ok=True)  # the old cache is invalid from here on
    unreadable: list[int] = []

    def write(f: BinaryIO) -> None:
        shape = (len(request.files), *request.shape)
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        start = 0
        for images, ok in decode_in_order(request.files, request.decode, request.shape):
            unreadable.extend(start + i for i, good in enumerate(ok) if not good)
            f.write(images.numpy().tobytes())
            start += len(ok)

    write_atomically(path, write)
    write_json(path.with_suffix(".json"), {**want, "unreadable": unreadable, "built": time.time()})
    return unreadable


class _DecodeFiles(Dataset):
    """Files decoded in batches: (uint8 (B, C, H, W), which decoded), the rows of unreadable files zero;
    one tensor a batch crosses from a worker, not one per image."""

    def __init__(
        self, files: list[Path], decode: Callable[[Path], torch.Tensor | None], shape: tuple
    ) -> None:
        self.files, self.decode, self.shape = files, decode, shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        try:
            return self.decode(self.files[i])
        except VaeError:  # celeba's decoder raises on a broken file: the caller names it
            return None

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, list[bool]]:
        decoded = [self[i] for i in index]
        images = torch.zeros(len(index), *self.shape, dtype=torch.uint8)
        for row, image in enumerate(decoded):
            if image is not None:
                images[row] = image
        return images, [image is not None for image in decoded]


def _as_is(batch: tuple[torch.Tensor, list[bool]]) -> tuple[torch.Tensor, list[bool]]:
    return batch


def decode_in_order(
    files: list[Path], decode: Callable[[Path], torch.Tensor | None], shape: tuple[int, int, int]
) -> Iterator[tuple[torch.Tensor, list[bool]]]:
    """Batches of the files decoded, in order: in this process for a few files, else in a worker per
    core (this process only writes what they decode)."""
    from vae_cli.training.runtime import available_cores

    dataset = _DecodeFiles(files, decode, shape)
    if len(files) < PARALLEL_DECODE_FROM:
        yield dataset.__getitems__(list(range(len(files))))
        return
    workers = available_cores()
    loader = DataLoader(dataset, batch_size=64, num_workers=workers, collate_fn=_as_is, prefetch_factor=4)
    yield from loader
