"""The decoded-image cache against decoding JPEGs in a DataLoader, on a folder of JPEGs written here, in
one run.

    .venv/bin/python benchmarks/cache.py                     # what `make bench-cache` runs (a few minutes)
    .venv/bin/python benchmarks/cache.py --images 2000 --model-images 512   # a quick look

It writes `--images` JPEGs (64x64 RGB by default, smooth colour fields with noise, seeded) into a
temporary folder (or `--folder`), then measures:

- images per second, for three paths: `dataset.cache=false dataset.in_memory=false` (a DataLoader whose
  workers decode, crop and resize every JPEG: the path of data that is not cached), the cache held in
  memory (`dataset.in_memory=auto`), and the cache memory-mapped (`dataset.in_memory=false`). Each path
  gives the train split's uint8 batches for three shuffled epochs: the second is timed as it comes (so
  that worker start-up is left out), the third with each batch made the float input of the training step
  (`prepare_batch`, the same work for every path).
- the first run's one-off cost: decoding every image into the cache (on every core).
- the conv model's training epoch (`vae train model=conv`, its own timing, metrics.json's
  `epoch_train_seconds`) on `--model-images` of the images (hard links in a second folder), fed by
  decoding and by the cache.

The JPEGs are read from the page cache (just written), as a dataset read a second time is.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vae_cli.config import DatasetConfig
from vae_cli.console import quiet
from vae_cli.data import create_dataset, make_batches, prepare_batch
from vae_cli.data.loaders import default_num_workers

CPU = torch.device("cpu")
CLASSES = 10


def write_jpegs(folder: Path, count: int, size: int, seed: int) -> None:
    """`count` size x size RGB JPEGs in CLASSES sub-folders: a smooth field of random colours (a 4x4 grid
    upsampled) with pixel noise, so that they compress and decode like photos rather than like noise."""
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        grid = Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))
        field = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(field + rng.integers(-12, 13, size=field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"c{i % CLASSES}" / f"{i:06d}.jpg", quality=90)


def link_subset(source: Path, target: Path, count: int) -> None:
    """The first `count` images of `source` (in sorted order), hard-linked into `target`."""
    files = sorted(source.rglob("*.jpg"))[:count]
    for f in files:
        dest = target / f.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dest)


def folder_config(folder: Path, size: int, **overrides: str) -> DatasetConfig:
    return DatasetConfig(name="image_folder", path=str(folder), image_size=size, channels=3, **overrides)


def images_per_second(split, in_memory: str, batch_size: int) -> tuple[float, float]:
    """(uint8 batches, float batches the step takes) per second: the second shuffled epoch of batches
    from `split`, then a third made into the step's input (`prepare_batch`)."""
    source = make_batches(split, batch_size, True, 0, CPU, in_memory)
    rates = []
    for epoch, prepare in ((0, False), (1, False), (2, True)):
        source.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for images in source:
            n += len(prepare_batch(images, "none") if prepare else images)
        rates.append(n / (time.perf_counter() - start))
    return rates[1], rates[2]


def timed(what) -> tuple[object, float]:
    start = time.perf_counter()
    out = what()
    return out, time.perf_counter() - start


def conv_epoch_seconds(
    folder: Path, size: int, cache: str, in_memory: str, batch_size: int, run_dir: Path
) -> float:
    """One epoch of `vae train model=conv` on the folder; the loop's own time of its training pass."""
    from vae_cli.cli import compose_config
    from vae_cli.training.loop import train

    cfg = compose_config(
        [
            "dataset=image_folder",
            f"dataset.path={folder}",
            f"dataset.image_size={size}",
            "dataset.channels=3",
            f"dataset.cache={cache}",
            f"dataset.in_memory={in_memory}",
            "model=conv",
            "loss=gaussian",
            "train.epochs=1",
            f"train.batch_size={batch_size}",
            "train.image_every=0",
            "device=cpu",
        ]
    )
    with quiet():
        metrics = train(cfg, run_dir)
    return metrics["epoch_train_seconds"][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24_000, help="JPEGs written (default 24,000)")
    parser.add_argument("--size", type=int, default=64, help="their size and the training size (64)")
    parser.add_argument("--model-images", type=int, default=2_000, help="images of the conv epochs (2,000)")
    parser.add_argument("--batch-size", type=int, default=128, help="train.batch_size (128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, help="write the JPEGs here instead of a temporary folder")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a busy 2-core machine two threads stall)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vae-bench-cache-") as tmp:
        work = Path(tmp)
        folder = args.folder or work / "jpegs"
        _, written = timed(lambda: write_jpegs(folder, args.images, args.size, args.seed))
        print(f"wrote {args.images} {args.size}x{args.size} RGB JPEGs in {written:.1f} s into {folder}")
        rows = measure_paths(folder, args, work)
        conv = measure_conv(folder, args, work)
    print_report(rows, conv, args)
    return 0


def measure_paths(folder: Path, args: argparse.Namespace, work: Path) -> dict:
    size, batch = args.size, args.batch_size
    cache_dir = str(work / "cache")
    decoding = create_dataset(folder_config(folder, size, cache="false", in_memory="false"), folder)
    rows: dict = {
        "decode": images_per_second(decoding.train, "false", batch),
        "train_images": len(decoding.train),
    }
    _, rows["build_s"] = timed(
        lambda: create_dataset(folder_config(folder, size, cache_dir=cache_dir), folder)
    )
    cached, rows["load_s"] = timed(
        lambda: create_dataset(folder_config(folder, size, cache_dir=cache_dir), folder)
    )
    rows["memory"] = images_per_second(cached.train, "auto", batch)
    mapped = create_dataset(folder_config(folder, size, cache_dir=cache_dir, in_memory="false"), folder)
    rows["mapped"] = images_per_second(mapped.train, "false", batch)
    return rows


def measure_conv(folder: Path, args: argparse.Namespace, work: Path) -> dict[str, float]:
    subset = work / "subset"
    link_subset(folder, subset, args.model_images)
    runs = work / "runs"
    epoch = {
        "decode": conv_epoch_seconds(subset, args.size, "false", "false", args.batch_size, runs / "decode"),
        "build": conv_epoch_seconds(subset, args.size, "true", "auto", args.batch_size, runs / "build"),
        "cached": conv_epoch_seconds(subset, args.size, "true", "auto", args.batch_size, runs / "cached"),
    }
    return epoch


def print_report(rows: dict, conv: dict[str, float], args: argparse.Namespace) -> None:
    n, decode = int(rows["train_images"]), rows["decode"]
    print()
    print(
        f"{args.images} JPEGs of {args.size}x{args.size} RGB ({n} in the train split), batch {args.batch_size}; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{default_num_workers()} DataLoader worker(s), {torch.get_num_threads()} torch thread(s)"
    )
    print()
    print("| path | uint8 batches/s (images) | into the step (float) | train-split epoch | vs decoding |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, key in (
        ("DataLoader decoding JPEGs (`dataset.cache=false`)", "decode"),
        ("cache, in memory (`dataset.cache=true`, the default)", "memory"),
        ("cache, memory-mapped (`dataset.in_memory=false`)", "mapped"),
    ):
        raw, stepped = rows[key]
        print(
            f"| {name} | {raw:,.0f} | {stepped:,.0f} | {n / stepped:.3f} s | "
            f"{raw / decode[0]:,.1f}x / {stepped / decode[1]:,.1f}x |"
        )
    print(
        f"| first run only: decoding every image into the cache | {args.images / rows['build_s']:,.0f} | | "
        f"{rows['build_s']:.1f} s (all {args.images}) | |"
    )
    print(f"| later runs: reading the cache | | | {rows['load_s']:.2f} s (all {args.images}) | |")
    print()
    m = round(args.model_images * 0.8)
    print(f"| conv model (`model=conv loss=gaussian`), one training epoch of {m} images | seconds |")
    print("| --- | ---: |")
    print(f"| decoding JPEGs in a DataLoader | {conv['decode']:.1f} |")
    print(f"| first run, building the cache (its build is before the epoch) | {conv['build']:.1f} |")
    print(f"| cache, in memory | {conv['cached']:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
