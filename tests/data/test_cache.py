"""The decoded-image cache (vae_cli/data/cache.py) of dataset=image_folder and dataset=celeba, on tiny
datasets in their real on-disk formats."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

import vae_cli.data.cache
from tests.helpers.cli import vae
from tests.helpers.data import make_celeba, make_image_folder
from vae_cli.config import DatasetConfig
from vae_cli.data import DataBundle, ImageSplit, create_dataset, make_batches
from vae_cli.data.cache import CachedImages
from vae_cli.data.image_folder import FolderImages
from vae_cli.errors import DataError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's cache folder ($VAE_CACHE_DIR) of each test, in its tmp_path: never ~/.cache."""
    folder = tmp_path / "user_cache"
    monkeypatch.setenv("VAE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the image files PIL opens (every decode and every readability check opens one)."""
    names: list[str] = []
    open_image = PIL.Image.open

    def counting_open(fp, *args, **kwargs):
        names.append(Path(fp).name if isinstance(fp, str | Path) else "<file>")
        return open_image(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    return names


def folder_config(path: Path, **overrides) -> DatasetConfig:
    settings = {"image_size": 8, "channels": 3, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    return DatasetConfig(name="image_folder", path=str(path), **{**settings, **overrides})


def celeba_config(**overrides) -> DatasetConfig:
    settings = {"image_size": 16, "channels": 3, "crop": 148, "download": False}
    return DatasetConfig(name="celeba", **{**settings, **overrides})


def batches(split, in_memory: str = "auto", seed: int = 3) -> list[torch.Tensor]:
    """Two epochs of shuffled batches of 4."""
    source = make_batches(split, 4, True, seed, CPU, in_memory, num_workers=0)
    out = []
    for epoch in range(2):
        source.set_epoch(epoch)
        out += list(source)
    return out


def same_batches(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def splits(bundle: DataBundle) -> tuple:
    return bundle.train, bundle.val, bundle.test


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_cached_image_folder_is_byte_identical_to_the_decode_path_with_the_same_batches(
    tmp_path: Path,
) -> None:
    folder = make_image_folder(tmp_path / "images")
    decoded = create_dataset(folder_config(folder, cache="false"), tmp_path)
    decoded_on_disk = create_dataset(folder_config(folder, cache="false", in_memory="false"), tmp_path)
    built = create_dataset(folder_config(folder), tmp_path)
    read = create_dataset(folder_config(folder), tmp_path)
    mapped = create_dataset(folder_config(folder, in_memory="false"), tmp_path)
    assert isinstance(decoded_on_disk.train, FolderImages) and isinstance(mapped.train, CachedImages)
    for bundle in (built, read):
        for ours, theirs in zip(splits(bundle), splits(decoded), strict=True):
            assert isinstance(ours, ImageSplit) and ours.images.dtype == torch.uint8
            assert torch.equal(
                ours.images, theirs.images
            )  # the broken PNG's row is skipped, as decoding does
            assert ours.names == theirs.names and torch.equal(ours.labels, theirs.labels)
    for ours, theirs in zip(splits(mapped), splits(decoded), strict=True):
        assert ours.names == theirs.names and torch.equal(ours.labels, theirs.labels)
        assert torch.equal(ours.take(range(len(ours))), theirs.images)
    expected = batches(decoded.train)
    assert same_batches(batches(read.train), expected)
    assert same_batches(batches(mapped.train), expected)  # memory-mapped, through a DataLoader
    assert same_batches(batches(decoded_on_disk.train), expected)
    assert cache_files(folder / ".vae_cache") == [
        "image_folder-3x8x8.json",
        "image_folder-3x8x8.lock",
        "image_folder-3x8x8.npy",
    ]


def test_cached_celeba_is_byte_identical_to_the_decode_path_with_the_same_batches(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, (10, 3, 3))
    decoded = create_dataset(celeba_config(cache="false"), root)
    cached = create_dataset(celeba_config(), root)
    mapped = create_dataset(celeba_config(in_memory="false"), root)
    assert isinstance(cached.train, ImageSplit) and isinstance(mapped.train, CachedImages)
    for ours, mine, theirs in zip(splits(cached), splits(mapped), splits(decoded), strict=True):
        everything = theirs.take(range(len(theirs)))
        assert ours.names == mine.names == theirs.names
        assert torch.equal(ours.images, everything) and torch.equal(mine.take(range(len(mine))), everything)
    expected = batches(decoded.train)  # a DataLoader decoding JPEGs
    assert same_batches(batches(cached.train), expected)
    assert same_batches(batches(mapped.train), expected)
    assert (root / "celeba" / ".vae_cache" / "celeba-3x16x16-crop148.npy").is_file()


def test_a_second_run_reads_the_cache_without_opening_an_image(
    tmp_path: Path, opened: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "images")
    with caplog.at_level(logging.INFO, logger="vae"):
        first = create_dataset(folder_config(folder), tmp_path)
        decodes = len(opened)
        second = create_dataset(folder_config(folder), tmp_path)
    assert decodes == 17  # 16 images and the broken file, once each
    assert len(opened) == decodes  # the second run opened nothing
    assert torch.equal(first.train.images, second.train.images)
    assert any("read the decoded images from the cache" in m for m in messages(caplog))
    # the broken file is still reported, from the manifest
    skipped = [m for m in messages(caplog, logging.WARNING) if "skipped 1 unreadable" in m]
    assert len(skipped) == 2


def test_celeba_reuses_its_cache_across_runs(tmp_path: Path, opened: list[str]) -> None:
    root = make_celeba(tmp_path, (4, 2, 2))
    create_dataset(celeba_config(), root)
    assert len(opened) == 8
    create_dataset(celeba_config(), root)
    create_dataset(celeba_config(in_memory="false"), root)
    assert len(opened) == 8


def test_an_added_file_makes_the_cache_stale_and_it_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "images")
    create_dataset(folder_config(folder), tmp_path)
    Image.fromarray(np.full((10, 10, 3), 77, dtype=np.uint8)).save(folder / "b" / "new.png")
    with caplog.at_level(logging.INFO, logger="vae"):
        rebuilt = create_dataset(folder_config(folder), tmp_path)
    decoded = create_dataset(folder_config(folder, cache="false"), tmp_path)
    assert any("the files changed: 18 images now, 17 when it was built" in m for m in messages(caplog))
    assert "b/new.png" in rebuilt.train.names + rebuilt.val.names + rebuilt.test.names
    for ours, theirs in zip(splits(rebuilt), splits(decoded), strict=True):
        assert torch.equal(ours.images, theirs.images)


def test_a_modified_file_makes_the_cache_stale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_image_folder(tmp_path / "images")
    create_dataset(folder_config(folder), tmp_path)
    changed = folder / "a" / "0.png"
    Image.fromarray(np.full((30, 30, 3), 200, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # another mtime even on a coarse clock
    with caplog.at_level(logging.INFO, logger="vae"):
        rebuilt = create_dataset(folder_config(folder, val_fraction=0, test_fraction=0), tmp_path)
    assert any("files were replaced or modified" in m for m in messages(caplog))
    image = rebuilt.train.images[rebuilt.train.names.index("a/0.png")]
    assert bool((image == 200).all())


def test_another_image_size_gets_its_own_cache_and_a_cache_of_other_settings_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "images")
    small = create_dataset(folder_config(folder), tmp_path)
    large = create_dataset(folder_config(folder, image_size=12), tmp_path)
    assert small.shape == (3, 8, 8) and large.shape == (3, 12, 12)
    assert torch.equal(
        large.train.images,
        create_dataset(folder_config(folder, image_size=12, cache="false"), tmp_path).train.images,
    )
    cache = folder / ".vae_cache"
    assert {"image_folder-3x8x8.npy", "image_folder-3x12x12.npy"} <= set(cache_files(cache))
    # a cache of another size under this size's name (copied by hand) is not used
    for suffix in (".npy", ".json"):
        (cache / f"image_folder-3x12x12{suffix}").write_bytes(
            (cache / f"image_folder-3x8x8{suffix}").read_bytes()
        )
    with caplog.at_level(logging.INFO, logger="vae"):
        again = create_dataset(folder_config(folder, image_size=12), tmp_path)
    assert any("built for other settings (image_size=8)" in m for m in messages(caplog))
    assert torch.equal(again.train.images, large.train.images)


def test_cache_false_never_writes(tmp_path: Path, user_cache: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    root = make_celeba(tmp_path / "data", (3, 1, 1))
    create_dataset(folder_config(folder, cache="false"), tmp_path)
    create_dataset(folder_config(folder, cache="false", in_memory="false"), tmp_path)
    create_dataset(celeba_config(cache="false"), root)
    assert not (folder / ".vae_cache").exists() and not (root / "celeba" / ".vae_cache").exists()
    assert not user_cache.exists()


def test_cache_rebuild_decodes_again_once(tmp_path: Path, opened: list[str]) -> None:
    folder = make_image_folder(tmp_path / "images")
    create_dataset(folder_config(folder), tmp_path)
    first = len(opened)
    rebuilt = create_dataset(folder_config(folder, cache="rebuild"), tmp_path)
    assert len(opened) == 2 * first
    create_dataset(folder_config(folder, cache="rebuild"), tmp_path)  # the next job of a sweep
    assert len(opened) == 2 * first
    assert torch.equal(rebuilt.train.images, create_dataset(folder_config(folder), tmp_path).train.images)


def make_read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No file can be created in `folder`: its permissions say so, and for root (whom permissions do not
    stop) the cache's write test is told so."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        can_write = vae_cli.data.cache.can_write
        monkeypatch.setattr(
            vae_cli.data.cache, "can_write", lambda f: not f.is_relative_to(folder) and can_write(f)
        )


def test_a_read_only_cache_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_image_folder(tmp_path / "images")
    locked = tmp_path / "locked"
    make_read_only(locked, monkeypatch)
    try:
        with pytest.raises(DataError) as e:
            create_dataset(folder_config(folder, cache_dir=str(locked)), tmp_path)
    finally:
        locked.chmod(0o755)
    text = str(e.value)
    assert "\n" not in text and f"dataset.cache_dir={locked}" in text and "not writable" in text
    assert "dataset.cache=false" in text


def test_a_read_only_cache_dir_on_the_command_line_is_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_image_folder(tmp_path / "images")
    locked = tmp_path / "locked"
    make_read_only(locked, monkeypatch)
    try:
        result = vae(
            ["train", "dataset=image_folder", f"dataset.path={folder}", f"dataset.cache_dir={locked}"],
            tmp_path,
        )
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the decoded-image cache"), (
        result.stderr
    )


def test_a_read_only_image_folder_caches_in_the_user_cache_folder(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str]
) -> None:
    folder = make_image_folder(tmp_path / "images")
    make_read_only(folder, monkeypatch)
    try:
        first = create_dataset(folder_config(folder), tmp_path)
        decodes = len(opened)
        second = create_dataset(folder_config(folder), tmp_path)
    finally:
        folder.chmod(0o755)
    assert not (folder / ".vae_cache").exists()
    (written,) = user_cache.glob("images-*/image_folder-3x8x8.npy")
    assert len(opened) == decodes and torch.equal(first.train.images, second.train.images)
    assert written.stat().st_size > 0


def test_no_writable_cache_folder_decodes_with_one_warning(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "images")
    make_read_only(folder, monkeypatch)
    make_read_only(user_cache, monkeypatch)
    try:
        with caplog.at_level(logging.INFO, logger="vae"):
            data = create_dataset(folder_config(folder), tmp_path)
    finally:
        folder.chmod(0o755)
        user_cache.chmod(0o755)
    cache_warnings = [
        m for m in messages(caplog, logging.WARNING) if "the cache" in m or "decoded-image cache" in m
    ]
    assert len(cache_warnings) == 1 and "decoding the images without it" in cache_warnings[0]
    decoded = create_dataset(folder_config(folder, cache="false"), tmp_path)
    assert torch.equal(data.train.images, decoded.train.images)


def test_a_truncated_cache_file_is_rebuilt_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "images")
    good = create_dataset(folder_config(folder), tmp_path)
    npy = folder / ".vae_cache" / "image_folder-3x8x8.npy"
    size = npy.stat().st_size
    npy.write_bytes(npy.read_bytes()[: size // 2])
    with caplog.at_level(logging.INFO, logger="vae"):
        again = create_dataset(folder_config(folder), tmp_path)
    (warning,) = [
        m for m in messages(caplog, logging.WARNING) if "the cache" in m or "decoded-image cache" in m
    ]
    assert "truncated" in warning and "rebuilding it" in warning and str(npy) in warning
    assert npy.stat().st_size == size and torch.equal(again.train.images, good.train.images)


def test_a_truncated_cache_file_in_a_read_only_cache_dir_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_image_folder(tmp_path / "images")
    shared = tmp_path / "shared"
    create_dataset(folder_config(folder, cache_dir=str(shared)), tmp_path)
    npy = shared / "image_folder-3x8x8.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    make_read_only(shared, monkeypatch)
    try:
        with pytest.raises(DataError) as e:
            create_dataset(folder_config(folder, cache_dir=str(shared)), tmp_path)
    finally:
        shared.chmod(0o755)
    text = str(e.value)
    assert "\n" not in text and "truncated" in text and "not writable" in text


def build_in_child(folder: str) -> tuple[int, bytes]:
    """In a forked process: build (or read) the folder's cache; (images opened, the train images)."""
    names: list[str] = []
    open_image = PIL.Image.open
    PIL.Image.open = lambda fp, *a, **k: names.append(str(fp)) or open_image(fp, *a, **k)
    data = create_dataset(folder_config(Path(folder), val_fraction=0, test_fraction=0), Path(folder))
    return len(names), data.train.images.numpy().tobytes()


def test_two_processes_building_at_once_decode_once_and_read_the_same_cache(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=30)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(build_in_child, [str(folder)] * 2)
    opened = sorted(count for count, _ in results)
    assert opened == [0, 61]  # one decoded the 60 images and the broken file; the other read its cache
    assert results[0][1] == results[1][1]
    assert not [p for p in (folder / ".vae_cache").iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]"])
def test_a_corrupt_manifest_is_rebuilt_with_one_warning(
    tmp_path: Path, manifest: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "images")
    good = create_dataset(folder_config(folder), tmp_path)
    (folder / ".vae_cache" / "image_folder-3x8x8.json").write_text(manifest)
    with caplog.at_level(logging.INFO, logger="vae"):
        again = create_dataset(folder_config(folder), tmp_path)
    (warning,) = [m for m in messages(caplog, logging.WARNING) if "the cache" in m]
    assert "manifest" in warning and "rebuilding it" in warning
    assert torch.equal(again.train.images, good.train.images)
