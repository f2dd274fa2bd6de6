"""The in-memory fast path against the DataLoader path: the same batches in the same order for a seed,
the same training run, dynamic binarisation on the device, and no per-step host reads in the loop.

No timing here: speed is measured by benchmarks/bench.py (`make bench`).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

import vae_cli.training.loop
import vae_cli.training.meter
import vae_cli.training.optim
from vae_cli.cli import compose_config
from vae_cli.data import ImageSplit, make_batches, prepare_batch
from vae_cli.data.base import FileSplit
from vae_cli.data.loaders import InMemoryBatches, LoaderBatches

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
TINY_TRAIN = [
    "dataset=synthetic",
    "dataset.size=300",
    "dataset.val_size=50",
    "dataset.test_size=50",
    "dataset.image_size=16",
    "model=mlp",
    "latent_dim=4",
    "train.epochs=1",
    "train.batch_size=32",
    "train.image_every=0",
    "train.num_workers=0",
    "device=cpu",
]


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


# ----------------------------------------------------------------------------- training, both paths


def compose_train(overrides: list[str]) -> DictConfig:
    return compose_config(overrides)


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every tensor -> Python read (.item(), .tolist(), float(), int(), bool()) that
    the training loop (vae_cli/training/loop.py and its meter) makes while train_epoch runs. Reads elsewhere
    (torch's optimiser) are not counted."""
    reads: list[str] = []
    inside = [False]
    loop_files = {str(Path(m.__file__).resolve()) for m in (vae_cli.training.loop, vae_cli.training.meter)}

    def recording(name: str) -> Any:
        real = getattr(torch.Tensor, name)

        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            if inside[0] and str(Path(caller.f_code.co_filename).resolve()) in loop_files:
                reads.append(f"{name} at {Path(caller.f_code.co_filename).name}:{caller.f_lineno}")
            return real(self, *args, **kwargs)

        return method

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, recording(name))
    real_epoch = vae_cli.training.loop.train_epoch

    def epoch(*args: Any, **kwargs: Any) -> dict[str, float]:
        inside[0] = True
        try:
            return real_epoch(*args, **kwargs)
        finally:
            inside[0] = False

    monkeypatch.setattr(vae_cli.training.loop, "train_epoch", epoch)
    yield reads


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_training_gives_the_same_run_in_memory_and_through_a_dataloader(
    tmp_path: Path, binarize: str
) -> None:
    runs = {}
    for in_memory in ("true", "false"):
        cfg = compose_train([*TINY_TRAIN, f"dataset.in_memory={in_memory}", f"dataset.binarize={binarize}"])
        runs[in_memory] = vae_cli.training.loop.train(cfg, tmp_path / in_memory)
    fast, loader = runs["true"], runs["false"]
    assert fast["steps"] == loader["steps"] == math.ceil(200 / 32)
    assert fast["best_epoch"] == loader["best_epoch"] == 1
    for split in ("train", "val", "test"):
        for key in ("loss", "recon", "kl", "neg_elbo"):
            assert fast[split][key] == pytest.approx(loader[split][key], rel=1e-6, abs=1e-6), (split, key)
            assert math.isfinite(fast[split][key])
    # the same weights, bit for bit or nearly
    weights = [torch.load(tmp_path / p / "checkpoints" / "last.ckpt")["model"] for p in ("true", "false")]
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=1e-6, atol=1e-7, msg=name)


def test_the_loop_reads_the_device_per_log_interval_not_per_step(
    tmp_path: Path, host_reads: list[str]
) -> None:
    def reads(batch_size: int, log_every: int) -> tuple[int, int]:
        host_reads.clear()
        overrides = [*TINY_TRAIN, f"train.batch_size={batch_size}", f"train.log_every={log_every}"]
        metrics = vae_cli.training.loop.train(
            compose_train(overrides), tmp_path / f"{batch_size}-{log_every}"
        )
        return len(host_reads), metrics["steps"]

    few, steps_few = reads(32, 10_000)  # one log interval: the epoch
    many, steps_many = reads(8, 10_000)
    assert (steps_few, steps_many) == (7, 25)
    assert many == few <= 4, host_reads  # 3.5x the steps, not one read more
    logged, _ = reads(8, 5)  # five intervals
    assert few < logged < steps_many, host_reads


def test_optimizer_is_fused_where_supported_and_resumes_across_implementations() -> None:
    """Adam runs its fused kernel on CPU; a state saved by one implementation (an older checkpoint, a
    machine without the fused kernel) loads into the other and keeps this machine's, with equal steps.
    (Deep copies stand in for the checkpoint file: load_state_dict would share the tensors otherwise.)"""
    cfg = compose_config(TINY_TRAIN)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    fused = vae_cli.training.optim.create_optimizer(model, cfg)
    assert fused.param_groups[0]["fused"] is True

    def step(optimizer: torch.optim.Optimizer, net: torch.nn.Module) -> None:
        optimizer.zero_grad()
        net(torch.ones(2, 4)).square().sum().backward()
        optimizer.step()

    step(fused, model)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    plain = torch.optim.Adam(twin.parameters(), lr=cfg.train.lr)  # torch's default implementation
    plain.load_state_dict(vae_cli.training.optim.with_kernels_of(plain, copy.deepcopy(fused.state_dict())))
    assert not plain.param_groups[0]["fused"]
    back = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    back.load_state_dict(vae_cli.training.optim.with_kernels_of(back, copy.deepcopy(plain.state_dict())))
    assert back.param_groups[0]["fused"] is True
    step(plain, twin)
    step(back, model)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)
