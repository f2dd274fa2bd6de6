"""Batches (vae_cli/data/loaders.py): the in-memory fast path against the DataLoader path (the same
batches in the same order for a seed), the shards of several processes, dynamic binarisation (on the
device) and the denoising corruptions.

No timing here: speed is measured by benchmarks/bench.py (`make bench`).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vae_cli.data import ImageSplit, make_batches, prepare_batch
from vae_cli.data.base import FileSplit
from vae_cli.data.loaders import EpochBatchSampler, InMemoryBatches, LoaderBatches, corrupt

CPU = torch.device("cpu")


DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def tiny_split(n: int = 103) -> ImageSplit:
    g = torch.Generator().manual_seed(1)
    # Every image distinct (its first pixel is its index), so equal batches mean the same examples.
    images = torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ImageSplit(images)


class OnDisk(FileSplit):
    """A split read per item, like CelebA's: each "file" is an index into the images."""

    def __init__(self, split: ImageSplit) -> None:
        super().__init__(
            list(range(len(split))), split.images.__getitem__, names=[str(i) for i in range(len(split))]
        )


def epoch_batches(source: Any, epoch: int) -> list[torch.Tensor]:
    source.set_epoch(epoch)
    return [b.cpu() for b in source]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# -------------------------------------------------------------------------------- batches and order


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("shuffle", [True, False])
def test_in_memory_and_dataloader_paths_give_the_same_batches(num_workers: int, shuffle: bool) -> None:
    split = tiny_split()
    fast = make_batches(split, 16, shuffle, 7, CPU, "true", num_workers)
    loader = make_batches(split, 16, shuffle, 7, CPU, "false", num_workers)
    assert isinstance(fast, InMemoryBatches) and isinstance(loader, LoaderBatches)
    assert len(fast) == len(loader) == 7 and fast.num_examples == loader.num_examples == 103
    for epoch in (0, 1, 0):  # going back to an epoch replays it
        a, b = epoch_batches(fast, epoch), epoch_batches(loader, epoch)
        assert same(a, b)
        assert [len(x) for x in a] == [16] * 6 + [7]
        # each epoch is a permutation of the split: every example exactly once
        seen = torch.cat(a)[:, 0, 0, 0].sort().values
        assert torch.equal(seen, torch.arange(103, dtype=torch.uint8))
    epoch0, epoch1 = epoch_batches(fast, 0), epoch_batches(fast, 1)
    if shuffle:
        assert not same(epoch0, epoch1)  # a new order every epoch
        assert not same(epoch0, epoch_batches(make_batches(split, 16, True, 8, CPU, "true"), 0))  # and seed
    else:
        assert same(epoch0, epoch1) and torch.equal(torch.cat(epoch0), split.images)


def test_auto_keeps_in_memory_splits_in_memory_and_reads_on_disk_data_in_the_same_order() -> None:
    split = tiny_split(50)
    assert isinstance(make_batches(split, 8, True, 0, CPU, "auto"), InMemoryBatches)
    on_disk = OnDisk(split)
    streamed = make_batches(on_disk, 8, True, 3, CPU, "auto", num_workers=0)
    materialized = make_batches(on_disk, 8, True, 3, CPU, "true", num_workers=0)
    assert isinstance(streamed, LoaderBatches) and isinstance(materialized, InMemoryBatches)
    for epoch in (0, 1):
        assert same(epoch_batches(streamed, epoch), epoch_batches(materialized, epoch))


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_in_memory_batches_live_on_the_device_as_uint8(device: torch.device) -> None:
    batches = make_batches(tiny_split(40), 16, True, 0, device, "true")
    first = next(iter(batches))
    assert first.device.type == device.type and first.dtype == torch.uint8 and first.shape == (16, 1, 6, 6)
    assert batches.images.device.type == device.type  # held once on the device, not copied per batch


def test_shards_together_make_the_single_process_batches() -> None:
    single = list(EpochBatchSampler(50, 8, True, 3))
    ranks = [list(EpochBatchSampler(50, 4, True, 3, rank=r, world_size=2, pad=True)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)  # every rank takes the same number of steps
    for i, batch in enumerate(single[:-1]):  # the last one is padded by wrapping around
        assert sorted(ranks[0][i] + ranks[1][i]) == sorted(batch)
    covered = {i for r in ranks for b in r for i in b}
    assert covered == set(range(50))
    evaluation = [list(EpochBatchSampler(50, 8, False, 0, rank=r, world_size=2)) for r in range(2)]
    assert sorted(i for r in evaluation for b in r for i in b) == list(range(50))  # no padding, no repeats


# ------------------------------------------------------------------------------- dynamic binarisation


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_dynamic_binarisation_on_the_device(device: torch.device) -> None:
    # Each pixel's intensity is its row's grey level: x ~ Bern(intensity), drawn on the device.
    levels = torch.tensor([0, 32, 128, 200, 255], dtype=torch.uint8, device=device)
    images = levels.view(5, 1, 1, 1).repeat_interleave(4000, 0).expand(-1, 1, 8, 8).contiguous()
    generator = torch.Generator(device=device).manual_seed(0)
    x = prepare_batch(images, "dynamic", generator)
    assert x.device.type == device.type and x.dtype == torch.float32 and x.shape == images.shape
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    means = x.view(5, 4000 * 64).mean(1).cpu()
    expected = levels.cpu().float() / 255
    assert torch.allclose(means, expected, atol=0.005), (means, expected)  # 256k draws per level
    assert means[0] == 0 and means[-1] == 1
    # seeded: reproducible; a fresh draw per call otherwise
    again = prepare_batch(images, "dynamic", torch.Generator(device=device).manual_seed(0))
    assert torch.equal(x, again)
    assert not torch.equal(x, prepare_batch(images, "dynamic", generator))
    # none: the grey levels scaled to [0, 1], nothing drawn
    assert torch.equal(prepare_batch(images, "none"), images.float() / 255)


def test_dynamic_binarisation_draws_fresh_bernoullis() -> None:
    images = torch.full((2000, 1, 4, 4), 64, dtype=torch.uint8)  # intensity 0.25
    x = prepare_batch(images, "dynamic")
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert abs(x.mean().item() - 64 / 255) < 0.01
    assert torch.equal(prepare_batch(images, "none"), torch.full((2000, 1, 4, 4), 64 / 255))
    assert not torch.equal(x, prepare_batch(images, "dynamic"))  # fresh draws every time
    extremes = torch.tensor([0, 255], dtype=torch.uint8).repeat(5000).view(-1, 1, 1, 2)
    drawn = prepare_batch(extremes, "dynamic")
    assert drawn[..., 0].eq(0).all() and drawn[..., 1].eq(1).all()  # black stays 0, white stays 1
    levels = torch.arange(0, 256, 15, dtype=torch.uint8).repeat(4000, 1).view(4000, 1, 1, -1)
    g = torch.Generator().manual_seed(0)
    means = prepare_batch(levels, "dynamic", g).mean(0).flatten()
    torch.testing.assert_close(means, levels[0].flatten().float() / 255, atol=0.025, rtol=0)


# ------------------------------------------------------------------------------------------ denoising


def test_corrupt_gaussian_mask_and_none() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 3, 8, 8), 0.5)
    noisy = corrupt(x, "gaussian", 0.1, torch.Generator().manual_seed(0))
    assert noisy.shape == x.shape and abs(float((noisy - x).std()) - 0.1) < 0.005
    assert corrupt(x, "gaussian", 2.0, g).min() >= 0 and corrupt(x, "gaussian", 2.0, g).max() <= 1
    assert corrupt(x, "gaussian", 2.0, g, clamp=False).abs().max() > 1
    masked = corrupt(x, "mask", 0.3, g)
    zeroed = masked == 0
    assert abs(float(zeroed.float().mean()) - 0.3) < 0.02
    assert (zeroed.all(1) == zeroed.any(1)).all()  # a pixel loses all its channels at once
    assert torch.equal(masked[~zeroed], x[~zeroed])
    assert corrupt(x, "none", 0.5) is x and corrupt(x, "mask", 0.0) is x
    again = corrupt(x, "gaussian", 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)  # reproducible given the generator
