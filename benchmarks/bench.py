"""Training speed of `vae` against the textbook PyTorch VAE loop, in one process on this machine.

    .venv/bin/python benchmarks/bench.py             # what `make bench` runs: 3 MLP epochs, 1 conv epoch
    .venv/bin/python benchmarks/bench.py --quick     # smoke run: 1 epoch of each on a 6k/1k subset
    .venv/bin/python benchmarks/bench.py --variants bf16,compile --conv-epochs 0

Every row trains on the same examples: `vae`'s training split of Fashion-MNIST (the examples it holds out
for validation, dataset.val_size, are left out of the textbook's files too), or, when Fashion-MNIST is
not found, synthetic shapes of the same sizes in the same IDX files. Batch 128, Adam 1e-3, grey-level
targets (no binarisation), seed 0.

  (a)  the textbook loop, as in pytorch/examples vae/main.py: torchvision's FashionMNIST with ToTensor,
       DataLoader(shuffle=True), the 784-400-20 MLP VAE, BCE(sum) + KLD, `loss.item()` every step;
  (a2) the same model and step, fed by a DataLoader over an in-memory TensorDataset;
  (a3) the same model and step, fed by slicing one in-memory float tensor with a shuffled index;
  (b)  `vae`'s own training: `vae_cli.train.train` with the config Hydra composes for
       `vae train dataset=fashion_mnist dataset.binarize=none model=mlp model.hidden_dims=[400]
       latent_dim=20 train.batch_size=128 loss=bernoulli`, for the MLP, and for the conv model with its
       default channels; its epochs are timed around `vae_cli.train.train_epoch`, the unmodified function;
  (m)  torch.matmul alone, at the shapes of the MLP's forward and backward matrix products.

An epoch is the training pass only: validation, checkpoints and the test pass fall outside it. Rows
take turns epoch by epoch (epoch 1 of every row, then epoch 2, ...; `vae train` runs in a thread that
waits at each epoch), so a slow spell of the machine falls on all rows alike, and each row keeps its own
random stream, so its numbers are those of a run on its own. The summary uses each row's best epoch
(the least disturbed); all are listed, and a warning says when the timings look disturbed.
GFLOP/s counts the matrix products of forward and backward (torch's FlopCounterMode), so "of (m)" says
how close a loop comes to the bare matrix products (measured before and after the loops; the better). Every model is scored by one function: the
negative ELBO in nats per example on the 10k test set, z drawn from a generator seeded the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import platform
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FMNIST_FOLDERS = (
    Path(os.environ.get("VAE_DATA_DIR", REPO / "data")) / "FashionMNIST" / "raw",
    Path("/usr/share/datasets/fashion-mnist"),
)
BATCH = 128
MLP_LAYERS = [(784, 400), (400, 40), (20, 400), (400, 784)]  # (in, out); 400 -> 40 is fc21 and fc22 together
VAE_OVERRIDES = [
    "dataset=fashion_mnist",
    "dataset.binarize=none",
    "latent_dim=20",
    f"train.batch_size={BATCH}",
    "loss=bernoulli",
]
VARIANTS = {  # optional extra rows: vae's MLP with these overrides
    "bf16": ["train.precision=bf16-mixed"],
    "compile": ["train.compile=true"],
    "dynamic": ["dataset.binarize=dynamic"],
}
TARGET_SPEEDUP, TARGET_MATMUL_SHARE = 3.0, 0.6
#: "equal" test loss: within the run-to-run noise of a few epochs, which (a) against (a3) shows (they
#: differ only in the order of the batches)
QUALITY_TOLERANCE = 0.5

console = Console() if sys.stdout.isatty() else Console(width=120)


# ----------------------------------------------------------------------------------------------- data


def find_fashion_mnist() -> dict[str, Path] | None:
    for folder in FMNIST_FOLDERS:
        found = {}
        for name in IDX_FILES:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x0000 0x08 (uint8) <ndim>, then the sizes as big-endian int32, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def prepare_data(root: Path, data: str, quick: bool) -> str:
    """Write <root>/FashionMNIST/raw/ (torchvision's layout, uncompressed), which `vae` reads."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    found = find_fashion_mnist() if data in ("auto", "fashion_mnist") else None
    if data == "fashion_mnist" and found is None:
        raise SystemExit(
            f"--data fashion_mnist: no Fashion-MNIST files in {', '.join(map(str, FMNIST_FOLDERS))}"
        )
    if found is not None:
        source = f"Fashion-MNIST ({found[IDX_FILES[0]].parent})"
        for name, path in found.items():
            with (
                (gzip.open if path.suffix == ".gz" else open)(path, "rb") as src,
                open(raw / name, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
    else:
        from vae_cli.data.synthetic import generate

        source = "synthetic shapes (vae_cli.data.synthetic) at Fashion-MNIST's sizes"
        shapes = generate(70_000, 28, seed=0)
        images, labels = shapes.images[:, 0].numpy(), shapes.labels.numpy().astype(np.uint8)
        arrays = (images[:60_000], labels[:60_000], images[60_000:], labels[60_000:])
        for name, array in zip(IDX_FILES, arrays, strict=True):
            write_idx(raw / name, array)
    if quick:  # the first 6k training and 1k test examples
        for name, n in zip(IDX_FILES, (6000, 6000, 1000, 1000), strict=True):
            write_idx(raw / name, read_idx(raw / name)[:n].copy())
        source += ", first 6k/1k (--quick)"
    return source


def textbook_data(root: Path, cfg) -> Path:
    """<root>/textbook/FashionMNIST/raw/ holding exactly `vae`'s training split (and the same test set)."""
    from vae_cli.data import create_dataset

    data = create_dataset(cfg.dataset, cfg.data_dir)
    raw = root / "textbook" / "FashionMNIST" / "raw"
    write_idx(raw / IDX_FILES[0], data.train.images[:, 0].numpy())
    write_idx(raw / IDX_FILES[1], data.train.labels.numpy().astype(np.uint8))
    for name in IDX_FILES[2:]:
        shutil.copy(root / "FashionMNIST" / "raw" / name, raw / name)
    return raw.parent.parent


# ------------------------------------------------------------------------------- the textbook loop (a)


class TextbookVAE(nn.Module):
    """pytorch/examples vae/main.py."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def textbook_epoch(model, optimizer, train_loader, device):
    model.train()
    train_loss = 0
    for data, _ in train_loader:
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return train_loss / len(train_loader.dataset)


class SlicedTensor:
    """(a3): one in-memory float tensor, a fresh shuffled index each epoch, a slice of it per batch."""

    def __init__(self, images: torch.Tensor) -> None:
        self.dataset = images

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        order = torch.randperm(len(self.dataset), device=self.dataset.device)
        for start in range(0, len(order), BATCH):
            yield self.dataset[order[start : start + BATCH]], None


class Rng:
    """A row's own torch RNG stream: rows take turns, and none draws from another's."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.state = device, None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outside = rng_state(self.device)
        if self.state is not None:
            set_rng_state(self.device, self.state)
        try:
            yield
        finally:
            self.state = rng_state(self.device)
            set_rng_state(self.device, outside)


def rng_state(device: torch.device) -> list[torch.Tensor]:
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])


def set_rng_state(device: torch.device, state: list[torch.Tensor]) -> None:
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


class TextbookRow:
    """(a), (a2), (a3): the textbook model and step, fed by `feed`; `epoch()` trains and times one epoch."""

    def __init__(
        self, name: str, feed: str, *, root: Path, device: torch.device, test: torch.Tensor, seed: int
    ) -> None:
        from torchvision import datasets, transforms

        self.name, self.device, self.test, self.seed = name, device, test, seed
        self.times: list[float] = []
        self.rng = Rng(device)
        with self.rng.active():
            torch.manual_seed(seed)
            train_set = datasets.FashionMNIST(
                str(root), train=True, download=False, transform=transforms.ToTensor()
            )
            if feed == "dataloader":
                self.loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
            elif feed == "tensordataset":
                images = train_set.data.unsqueeze(1).float().div(255)
                self.loader = DataLoader(
                    TensorDataset(images, train_set.targets), batch_size=BATCH, shuffle=True
                )
            else:
                self.loader = SlicedTensor(train_set.data.unsqueeze(1).float().div(255).to(device))
            self.model = TextbookVAE().to(device)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.n = len(train_set)

    def epoch(self) -> None:
        with self.rng.active():
            start = time.perf_counter()
            textbook_epoch(self.model, self.optimizer, self.loader, self.device)
            synchronize(self.device)
            self.times.append(time.perf_counter() - start)

    def finish(self) -> dict:
        model, device = self.model, self.device

        def score(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
            mu, logvar = model.encode(x.view(-1, 784))
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=device)
            return F.binary_cross_entropy(model.decode(z), x.view(-1, 784), reduction="sum"), mu, logvar

        return result(
            self.name, self.n, self.times, MLP_FLOPS, test_neg_elbo(model, score, self.test, self.seed)
        )


# ------------------------------------------------------------------------------------------ vae (b)


def vae_config(
    model: str, epochs: int, extra: list[str], root: Path, device: torch.device, seed: int, quick: bool
):
    """The config `vae train <overrides>` runs with, composed by Hydra from the shipped conf/."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from vae_cli.cli import config_dir
    from vae_cli.config import register_configs

    overrides = [
        *VAE_OVERRIDES,
        f"model={model}",
        *(["model.hidden_dims=[400]"] if model == "mlp" else []),
        f"train.epochs={epochs}",
        f"data_dir={root}",
        "dataset.download=false",
        f"device={device.type}",
        f"seed={seed}",
        *(["dataset.val_size=500"] if quick else []),
        *extra,
    ]
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.resolve(cfg)
    return cfg


@contextlib.contextmanager
def quiet_vae_console() -> Iterator[None]:
    """vae's own progress bar and results table stay silent (its test loss is shown in brackets)."""
    from vae_cli import logging as vae_logging

    console_ = vae_logging.console
    quiet, console_.quiet = console_.quiet, True
    try:
        yield
    finally:
        console_.quiet = quiet


class VaeRow:
    """(b): `vae_cli.train.train(cfg, run_dir)`, the command's own code, run in a thread that pauses at
    every call of `vae_cli.train.train_epoch` until `epoch()` lets one epoch run (timed around the
    unmodified function). Between epochs train() validates and checkpoints; `epoch()` waits for that too,
    so no two rows ever run at once. At the end its best checkpoint is scored like every other row."""

    def __init__(
        self, name: str, cfg, *, root: Path, device: torch.device, test: torch.Tensor, seed: int
    ) -> None:
        from vae_cli.train import train

        self.name, self.cfg, self.device, self.test, self.seed = name, cfg, device, test, seed
        self.run_dir = root / "runs" / name.replace(" ", "_")
        self.times: list[float] = []
        self.n = 0
        self.go, self.parked = threading.Semaphore(0), threading.Semaphore(0)
        self.done, self.error, self.metrics = False, None, None

        def target() -> None:
            ROWS[threading.get_ident()] = self
            try:
                self.metrics = train(cfg, self.run_dir)
            except BaseException as e:  # noqa: BLE001  handed to the main thread
                self.error = e
            finally:
                self.done = True
                self.parked.release()

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        with self.paused_rng():
            self.thread.start()
            self.parked.acquire()  # set up, and waiting at the first epoch
        if self.error is not None:
            raise self.error

    @contextlib.contextmanager
    def paused_rng(self) -> Iterator[None]:
        """The main thread's RNG stream, untouched by what the training thread draws meanwhile."""
        state = rng_state(self.device)
        try:
            yield
        finally:
            set_rng_state(self.device, state)

    def timed_epoch(self, real: Callable, *args, **kwargs):  # runs in the training thread
        state = rng_state(self.device)
        self.parked.release()
        self.go.acquire()
        set_rng_state(self.device, state)
        start = time.perf_counter()
        out = real(*args, **kwargs)
        synchronize(self.device)
        self.times.append(time.perf_counter() - start)
        self.n = next(a.num_examples for a in args if hasattr(a, "num_examples"))
        return out

    def epoch(self) -> None:
        if not self.done:
            with self.paused_rng():
                self.go.release()
                self.parked.acquire()  # the epoch, then validation and checkpoints, are done
        if self.error is not None:
            raise self.error

    def finish(self) -> dict:
        from vae_cli.checkpoint import load_checkpoint
        from vae_cli.likelihoods import create_likelihood
        from vae_cli.models import create_model

        while not self.done:  # more epochs than planned (not the case unless train() changes)
            self.epoch()
        self.thread.join()
        if self.error is not None:
            raise self.error
        cfg, device = self.cfg, self.device
        net = create_model(cfg.model, (1, 28, 28), cfg.latent_dim, create_likelihood(cfg.loss)).to(device)
        net.load_state_dict(load_checkpoint(self.run_dir / "checkpoints" / "best.ckpt", device)["model"])

        def score(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
            mu, logvar = net.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=device)
            logits = net.decode(z).flatten(1)
            return F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum"), mu, logvar

        flops = count_flops(net, device)
        out = result(self.name, self.n, self.times, flops, test_neg_elbo(net, score, self.test, self.seed))
        out["own_test"] = self.metrics["test"]["neg_elbo"]
        return out


#: training thread id -> its row
ROWS: dict[int, VaeRow] = {}


@contextlib.contextmanager
def epochs_paused_by_rows() -> Iterator[None]:
    """Route vae_cli.train.train_epoch through the calling thread's VaeRow (see VaeRow)."""
    import vae_cli.train

    real = vae_cli.train.train_epoch

    def train_epoch(*args, **kwargs):
        row = ROWS.get(threading.get_ident())
        return real(*args, **kwargs) if row is None else row.timed_epoch(real, *args, **kwargs)

    vae_cli.train.train_epoch = train_epoch
    try:
        yield
    finally:
        vae_cli.train.train_epoch = real


# ------------------------------------------------------------------------ scoring, FLOPs and matmul


@torch.no_grad()
def test_neg_elbo(model: nn.Module, score: Callable, test: torch.Tensor, seed: int) -> float:
    """Negative ELBO (nats per example) on the test set: -log p(x|z), the summed BCE on grey levels that
    `score` returns with mu and logvar, plus the KL; one z per example from a generator seeded with
    `seed` (as vae_cli.train.evaluate_batches draws it); batches of 128 in order."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for start in range(0, len(test), BATCH):
        x = test[start : start + BATCH].to(device).float().div(255).unsqueeze(1)
        recon, mu, logvar = score(x, generator)
        kl = 0.5 * torch.sum(mu.pow(2) + logvar.exp() - 1 - logvar)
        total += (recon + kl).item()
    return total / len(test)


def mlp_flops_per_example() -> int:
    """Matrix-product FLOPs of one training step per example: forward 2*in*out per layer; backward the
    weight gradient (2*in*out) of every layer and the input gradient (2*in*out) of all but the first."""
    forward = sum(2 * i * o for i, o in MLP_LAYERS)
    return forward + forward + (forward - 2 * 784 * 400)


MLP_FLOPS = mlp_flops_per_example()


def count_flops(model: nn.Module, device: torch.device) -> int:
    """FLOPs per example of a training step (forward + backward), as torch's FlopCounterMode counts them."""
    from vae_cli.objectives import elbo_terms

    x = torch.rand(BATCH, *model.image_shape, device=device)
    with FlopCounterMode(display=False) as counter:
        elbo_terms(model, x).loss(1.0).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // BATCH


def matmul_benchmark(device: torch.device, seconds: float) -> float:
    """GFLOP/s of torch.matmul at the MLP's shapes, batch 128: forward x @ W.T; backward dY.T @ x (weight
    gradients) and dY @ W (input gradients, not for the first layer)."""
    g = torch.Generator().manual_seed(0)
    ops = []
    for i, (n_in, n_out) in enumerate(MLP_LAYERS):
        x, w, dy = (
            torch.randn(*s, generator=g).to(device) for s in ((BATCH, n_in), (n_out, n_in), (BATCH, n_out))
        )
        ops += [(x, w.t()), (dy.t(), x)] + ([(dy, w)] if i > 0 else [])
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in ops)
    assert flops == MLP_FLOPS * BATCH, (flops, MLP_FLOPS * BATCH)

    def step():
        for a, b in ops:
            torch.matmul(a, b)

    for _ in range(50):
        step()
    synchronize(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:  # best of 0.1 s windows, like the best epoch
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.1:
            for _ in range(10):
                step()
            reps += 10
        synchronize(device)
        best = max(best, flops * reps / (time.perf_counter() - start))
    return best / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- report


def result(name: str, n: int, times: list[float], flops_per_example: int, test_loss: float) -> dict:
    best = min(times)
    return {
        "name": name,
        "n": n,
        "times": times,
        "epoch": best,
        "ex_per_s": n / best,
        "gflops": flops_per_example * n / best / 1e9,
        "flops": flops_per_example,
        "test": test_loss,
    }


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def report(rows: list[dict], matmul_gflops: float) -> Table:
    base = rows[0]
    table = Table(title=f"training epochs of {base['n']:,} examples, batch {BATCH}")
    columns = (
        "",
        "epochs (s)",
        "best (s)",
        "examples/s",
        "vs (a)",
        "MFLOP/ex",
        "GFLOP/s",
        "of (m)",
        "test -ELBO",
    )
    for col in columns:
        table.add_column(col, justify="left" if not col else "right")
    for r in rows:
        table.add_row(
            r["name"],
            " ".join(f"{t:.2f}" for t in r["times"]),
            f"{r['epoch']:.2f}",
            f"{r['ex_per_s']:,.0f}",
            f"{base['epoch'] / r['epoch']:.2f}x",
            f"{r['flops'] / 1e6:.2f}",
            f"{r['gflops']:.1f}",
            f"{100 * r['gflops'] / matmul_gflops:.0f}%",
            f"{r['test']:.2f}" + (f" ({r['own_test']:.2f})" if "own_test" in r else ""),
        )
    matmul_epoch = MLP_FLOPS * base["n"] / (matmul_gflops * 1e9)
    table.add_row(
        "(m) matmul", "", f"{matmul_epoch:.2f}", f"{base['n'] / matmul_epoch:,.0f}", f"{base['epoch'] / matmul_epoch:.2f}x",
        f"{MLP_FLOPS / 1e6:.2f}", f"{matmul_gflops:.1f}", "100%", "",
    )  # fmt: skip
    return table


LEGEND = """\
(a) textbook: pytorch/examples vae/main.py: torchvision FashionMNIST + ToTensor + DataLoader(shuffle=True)
(a2) the same model and step fed by DataLoader(TensorDataset) in memory; (a3) by slicing one float tensor
(b) vae: vae_cli.train.train with Hydra's config for `vae train dataset=fashion_mnist dataset.binarize=none
    model=mlp model.hidden_dims=[400] latent_dim=20 train.batch_size=128 loss=bernoulli` (conv: model=conv)
(m) torch.matmul alone at the MLP's forward and backward shapes: the time its matrix products need
best: the fastest epoch; vs (a): epoch time of (a) / this row's; GFLOP/s: matrix-product FLOPs of forward
and backward per second; of (m): that against (m); test -ELBO: nats per example on the 10k test set, the
one scoring function for every row (vae's own evaluation in brackets)"""


def run_round_robin(plan: list[tuple[str, int, Callable]]) -> list[dict]:
    """Set every row up, then run epoch 1 of every row, epoch 2 of every row, ...: a slow spell of the
    machine then falls on all rows alike. A row that fails is reported and dropped, except (a) and (b)."""
    essential = ("(a) textbook", "(b) vae mlp")
    rows: dict[str, Any] = {}
    epochs: dict[str, int] = {}

    def attempt(name: str, fn: Callable) -> Any:
        try:
            return fn()
        except Exception as e:  # an optional row (a variant, conv) that fails is reported, not fatal
            if name in essential:
                raise
            rows.pop(name, None)
            console.print(f"[red]{name} failed[/]: {type(e).__name__}: {e}", highlight=False)
            return None

    with quiet_vae_console(), epochs_paused_by_rows():
        for name, n_epochs, make in plan:
            if (row := attempt(name, make)) is not None:
                rows[name], epochs[name] = row, n_epochs
        for e in range(max(epochs.values())):
            for name, row in list(rows.items()):
                if e < epochs[name]:
                    attempt(name, row.epoch)
        results = []
        for name, row in list(rows.items()):
            if (r := attempt(name, row.finish)) is not None:
                results.append(r)
                console.print(
                    f"{name}: {r['n']:,} examples, epochs {' '.join(f'{t:.2f}' for t in r['times'])} s, "
                    f"test -ELBO {r['test']:.2f}"
                )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each MLP loop (default 3)")
    parser.add_argument("--conv-epochs", type=int, default=1, help="epochs of vae's conv model (0 skips it)")
    parser.add_argument(
        "--data",
        choices=("auto", "fashion_mnist", "synthetic"),
        default="auto",
        help="auto (default): Fashion-MNIST when its files are found, else synthetic data of its sizes",
    )
    parser.add_argument("--device", default="cpu", help="device for every loop (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--no-ladder", action="store_true", help="skip rows (a2) and (a3)")
    parser.add_argument(
        "--variants", default="", help=f"extra vae MLP rows, comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch of each on a 6k/1k subset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown --variants {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    if args.quick:
        args.epochs, args.conv_epochs = 1, min(args.conv_epochs, 1)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.threads or cores)
    device = torch.device(args.device)
    console.print(
        f"[bold]vae training benchmark[/bold]: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device}, CPU {cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}"
    )

    with tempfile.TemporaryDirectory(prefix="vae-bench-") as tmp:
        root = Path(tmp)
        console.print(f"data: {prepare_data(root, args.data, args.quick)}")
        config = partial(vae_config, root=root, device=device, seed=args.seed, quick=args.quick)
        textbook_root = textbook_data(root, config("mlp", 1, []))
        from torchvision import datasets

        test = datasets.FashionMNIST(str(root), train=False, download=False).data
        matmul_seconds = 1.0 if args.quick else 3.0
        matmul_before = matmul_benchmark(device, matmul_seconds)
        console.print(f"(m) torch.matmul at the MLP's shapes: {matmul_before:.1f} GFLOP/s")

        textbook = partial(TextbookRow, root=textbook_root, device=device, test=test, seed=args.seed)
        vae = partial(VaeRow, root=root, device=device, test=test, seed=args.seed)
        plan = [("(a) textbook", args.epochs, partial(textbook, "(a) textbook", "dataloader"))]
        if not args.no_ladder:
            plan += [
                ("(a2) TensorDataset", args.epochs, partial(textbook, "(a2) TensorDataset", "tensordataset")),
                ("(a3) sliced tensor", args.epochs, partial(textbook, "(a3) sliced tensor", "sliced")),
            ]
        plan.append(("(b) vae mlp", args.epochs, partial(vae, "(b) vae mlp", config("mlp", args.epochs, []))))
        for variant in variants:
            name = f"(b) vae mlp {variant}"
            plan.append(
                (name, args.epochs, partial(vae, name, config("mlp", args.epochs, VARIANTS[variant])))
            )
        if args.conv_epochs:
            conv = config("conv", args.conv_epochs, [])
            plan.append(("(b) vae conv", args.conv_epochs, partial(vae, "(b) vae conv", conv)))
        rows = run_round_robin(plan)

        matmul_after = matmul_benchmark(device, matmul_seconds)
        console.print(f"(m) again, after the loops: {matmul_after:.1f} GFLOP/s")

    matmul_gflops = max(matmul_before, matmul_after)
    console.print(report(rows, matmul_gflops))
    console.print(LEGEND, highlight=False)
    textbook_row, mlp = rows[0], next(r for r in rows if r["name"] == "(b) vae mlp")
    speedup, share = textbook_row["epoch"] / mlp["epoch"], mlp["gflops"] / matmul_gflops
    checks = [
        (
            f"vae's MLP epoch {speedup:.2f}x faster than the textbook loop's (target >= {TARGET_SPEEDUP:g}x)",
            speedup >= TARGET_SPEEDUP,
        ),
        (
            f"vae's MLP test -ELBO {mlp['test']:.2f} against the textbook's {textbook_row['test']:.2f} "
            f"(target: equal, within {QUALITY_TOLERANCE} nats, or better)",
            mlp["test"] <= textbook_row["test"] + QUALITY_TOLERANCE,
        ),
        (
            f"vae's MLP at {100 * share:.0f}% of the matmul micro-benchmark's GFLOP/s "
            f"(target >= {100 * TARGET_MATMUL_SHARE:.0f}%)",
            share >= TARGET_MATMUL_SHARE,
        ),
    ]
    for text, ok in checks:
        console.print(f"{'[green]PASS[/]' if ok else '[red]MISS[/]'} {text}")
    noisy = [r["name"] for r in rows if len(r["times"]) > 1 and max(r["times"]) > 1.15 * min(r["times"])]
    if min(matmul_before, matmul_after) < 0.9 * matmul_gflops or noisy:
        console.print(
            f"[yellow]warning[/]: other work on this machine disturbed the timings (matmul {matmul_before:.0f} "
            f"then {matmul_after:.0f} GFLOP/s; epochs spread over 15%: {', '.join(noisy) or 'none'}); "
            "run again when it is idle",
            highlight=False,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
