"""Training speed of `vae` against the textbook PyTorch VAE loop, in one process on this machine.

    .venv/bin/python benchmarks/bench.py             # what `make bench` runs: 5 epochs per MLP row, 1 conv epoch
    .venv/bin/python benchmarks/bench.py --quick     # smoke run: 1 epoch of each on a 6k/1k subset
    .venv/bin/python benchmarks/bench.py --variants '' --conv-epochs 0   # the fp32 MLP rows only

Every row trains on the same examples: `vae`'s training split of Fashion-MNIST (the examples it holds out
for validation, dataset.val_size, are left out of the textbook's files too), or, when Fashion-MNIST is
not found, synthetic shapes of the same sizes in the same IDX files. Batch 128, Adam 1e-3, grey-level
targets (no binarisation), seed 0.

  (a)  the textbook loop, as in pytorch/examples vae/main.py: torchvision's FashionMNIST with ToTensor,
       DataLoader(shuffle=True), the 784-400-20 MLP VAE, BCE(sum) + KLD, `loss.item()` every step;
  (a2) the same model and step, fed by a DataLoader over an in-memory TensorDataset;
  (a3) the same model and step, fed by slicing one in-memory float tensor with a shuffled index;
  (b)  `vae`'s own training: `vae_cli.training.loop.train` with the config Hydra composes for
       `vae train dataset=fashion_mnist dataset.binarize=none model=mlp model.hidden_dims=[400]
       latent_dim=20 train.batch_size=128 loss=bernoulli`, for the MLP, and for the conv model with its
       default channels; its epochs are timed by the loop itself (metrics.json's `epoch_train_seconds`);
       extra MLP rows (--variants) add train.precision=bf16-mixed, train.compile=true or dynamic
       binarisation; the targets are checked on the plain fp32 row;
  (c)  the floor: the textbook model trained with vae's kernels (index_select batches of uint8 images,
       the Bernoulli NLL with its hand-written backward, fused Adam) in a bare loop, nothing else;
  (m)  torch.matmul alone, at the shapes of the MLP's forward and backward matrix products.

An epoch is the training pass only: validation, checkpoints and the test pass fall outside it. The
epochs of (a), (a2), (a3), (c) and vae's fp32 MLP interleave, round by round (a slow spell on a shared machine
then slows all of them alike; each textbook row keeps its own RNG state, so vae draws exactly what `vae
train` draws); the other rows follow one after another. Everything runs in the main thread (ATen's
OpenMP loops run several times slower when called from another thread, so `vae train` is not run in
one). The summary uses each row's best epoch (the least disturbed by other work on the machine); all
are listed, and a warning says when the timings look
disturbed: the micro-benchmark measured after the loops differs from the one before, or a row's epochs
spread by more than 15%. Last, an anatomy of the floor's step (--no-anatomy skips it): the whole step,
the step without Adam, the Bernoulli NLL against binary_cross_entropy_with_logits, and dynamic
binarisation against torch.bernoulli, interleaved; and the conv model's anatomy at each --conv-anatomy
shape (1x28x28 and 3x64x64): every conv layer's forward + backward as vae runs it (channels-last, 1x1
layers as matrix products, the last transposed conv as a product plus overlap-add: vae_cli/models/conv.py)
against the stock op it replaces (NCHW), the whole training step of both, and (m) in the same rounds,
with each one's GFLOP/s and share of (m). GFLOP/s counts the matrix products of forward and backward (torch's
FlopCounterMode), so "of (m)" says how close a loop comes to the bare matrix products. Every model is
scored by one function: the negative ELBO in nats per example on the 10k test set, z drawn from a
generator seeded the same way.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

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

from vae_cli.console import cpu_name, quiet  # noqa: E402
from vae_cli.data.mnist import FILES, read_idx, write_idx  # noqa: E402
from vae_cli.training.runtime import available_cores, cpu_features, describe_cpu_features  # noqa: E402

IDX_FILES = tuple(FILES.values())
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


def floor_step(model: TextbookVAE, optimizer, x: torch.Tensor, adam: bool = True) -> None:
    """One step of (c): the textbook model's layers with logits out, vae's Bernoulli NLL (its hand-written
    backward) plus vae's closed-form KL, averaged per example; fused Adam unless `adam` is False."""
    from vae_cli.likelihoods import BernoulliNLL
    from vae_cli.models.vae import gaussian_kl

    mu, logvar = model.encode(x)
    logits = model.fc4(F.relu(model.fc3(model.reparameterize(mu, logvar))))
    loss = (BernoulliNLL.apply(logits, x) + gaussian_kl(mu, logvar).sum(1)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if adam:
        optimizer.step()


def floor_epoch(model: TextbookVAE, optimizer, images: torch.Tensor, device: torch.device) -> None:
    """(c): vae's kernels in a bare loop: uint8 rows by index_select, scaled on the device, `floor_step`;
    no logging, no checks, no config. What vae's loop could reach."""
    model.train()
    order = torch.randperm(len(images), device=device)
    for start in range(0, len(order), BATCH):
        floor_step(model, optimizer, images.index_select(0, order[start : start + BATCH]).float().div_(255))


class TextbookRow:
    """(a), (a2), (a3): the textbook model and step, fed by `feed`, one timed epoch per `epoch()` call;
    (c) with feed "floor": the same model trained by `floor_epoch`.

    It keeps its own global-RNG state between calls (its DataLoader shuffles and its z draws use torch's
    global generator), so its epochs can run between vae's epochs without changing vae's draws."""

    def __init__(self, name: str, feed: str, *, root: Path, device: torch.device, seed: int) -> None:
        from torchvision import datasets, transforms

        self.name, self.device, self.times = name, device, []
        self.cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self.cuda):
            torch.manual_seed(seed)
            self.train_set = datasets.FashionMNIST(
                str(root), train=True, download=False, transform=transforms.ToTensor()
            )
            if feed == "dataloader":
                self.loader = DataLoader(self.train_set, batch_size=BATCH, shuffle=True)
            elif feed == "tensordataset":
                images = self.train_set.data.unsqueeze(1).float().div(255)
                self.loader = DataLoader(
                    TensorDataset(images, self.train_set.targets), batch_size=BATCH, shuffle=True
                )
            elif feed == "sliced":
                self.loader = SlicedTensor(self.train_set.data.unsqueeze(1).float().div(255).to(device))
            else:  # floor: one uint8 tensor of flattened images on the device
                self.loader = self.train_set.data.flatten(1).to(device)
            self.feed = feed
            self.model = TextbookVAE().to(device)
            fused = {"fused": True} if feed == "floor" else {}
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, **fused)
            self.rng = self.rng_states()

    def rng_states(self) -> list[torch.Tensor]:
        return [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in self.cuda)]

    def epoch(self) -> None:
        with torch.random.fork_rng(devices=self.cuda):
            torch.set_rng_state(self.rng[0])
            for d, state in zip(self.cuda, self.rng[1:], strict=True):
                torch.cuda.set_rng_state(state, d)
            start = time.perf_counter()
            run_epoch = floor_epoch if self.feed == "floor" else textbook_epoch
            run_epoch(self.model, self.optimizer, self.loader, self.device)
            synchronize(self.device)
            self.times.append(time.perf_counter() - start)
            self.rng = self.rng_states()

    def result(self, test: torch.Tensor, seed: int) -> dict:
        model, device, logits_out = self.model, self.device, self.feed == "floor"

        def score(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
            x = x.view(-1, 784)
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=device)
            if logits_out:
                logits = model.fc4(F.relu(model.fc3(z)))
                return F.binary_cross_entropy_with_logits(logits, x, reduction="sum"), mu, logvar
            return F.binary_cross_entropy(model.decode(z), x, reduction="sum"), mu, logvar

        loss = test_neg_elbo(model, score, test, seed)
        return result(self.name, len(self.train_set), self.times, MLP_FLOPS, loss)


# ------------------------------------------------------------------------------------------ vae (b)


def vae_config(
    model: str, epochs: int, extra: list[str], root: Path, device: torch.device, seed: int, quick: bool
):
    """The config `vae train <overrides>` runs with, composed by Hydra from the shipped conf/."""

    from vae_cli.cli import compose_config

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
    return compose_config(overrides)


def run_vae(
    name: str,
    cfg,
    *,
    root: Path,
    device: torch.device,
    test: torch.Tensor,
    seed: int,
    between: Callable[[], None] = lambda: None,
) -> dict:
    """(b): `vae_cli.training.loop.train(cfg, run_dir)`, with `between` run before each of its epochs; then its
    best checkpoint is scored like the others."""
    from vae_cli.checkpoint import load_checkpoint
    from vae_cli.likelihoods import create_likelihood
    from vae_cli.models import create_model
    from vae_cli.training.loop import train

    run_dir = root / "runs" / name.replace(" ", "_")
    with quiet():
        metrics = train(cfg, run_dir, before_epoch=between)  # the loop times its own training passes
    net = create_model(cfg.model, (1, 28, 28), cfg.latent_dim, create_likelihood(cfg.loss)).to(device)
    net.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.ckpt", device)["model"])

    def score(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        mu, logvar = net.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=device)
        logits = net.decode(z).flatten(1)
        return F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum"), mu, logvar

    times = metrics["epoch_train_seconds"]
    examples = round(metrics["train"]["examples_per_sec"] * times[-1])
    # FLOPs of the stock layers (the matrix products vae runs for its 1x1 layers skip the zero-padding taps)
    flops = count_flops(stock_conv_model(net) if cfg.model.name == "conv" else net, device)
    out = result(name, examples, times, flops, test_neg_elbo(net, score, test, seed))
    out["own_test"] = metrics["test"]["neg_elbo"]
    return out


# ------------------------------------------------------------------------ scoring, FLOPs and matmul


@torch.no_grad()
def test_neg_elbo(model: nn.Module, score: Callable, test: torch.Tensor, seed: int) -> float:
    """Negative ELBO (nats per example) on the test set: -log p(x|z), the summed BCE on grey levels that
    `score` returns with mu and logvar, plus the KL; one z per example from a generator seeded with
    `seed` (as vae_cli.training.loop.evaluate_batches draws it); batches of 128 in order."""
    from vae_cli.models.vae import gaussian_kl

    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for start in range(0, len(test), BATCH):
        x = test[start : start + BATCH].to(device).float().div(255).unsqueeze(1)
        recon, mu, logvar = score(x, generator)
        kl = gaussian_kl(mu, logvar).sum()
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


def matmul_step(device: torch.device) -> Callable[[], None]:
    """torch.matmul at the MLP's shapes, batch 128 (MLP_FLOPS * BATCH FLOPs a call): forward x @ W.T;
    backward dY.T @ x (weight gradients) and dY @ W (input gradients, not for the first layer)."""
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

    return step


def matmul_benchmark(device: torch.device, seconds: float) -> float:
    """GFLOP/s of `matmul_step`, best of 0.1 s windows over `seconds`."""
    flops, step = MLP_FLOPS * BATCH, matmul_step(device)
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


def step_anatomy(device: torch.device, rounds: int = 8, steps: int = 40) -> dict[str, float]:
    """Milliseconds per step of the floor loop (c) on random uint8 images, with parts taken away, the
    variants interleaved round by round and each one's best round kept: where a step's time goes."""
    from vae_cli.data import prepare_batch
    from vae_cli.likelihoods import BernoulliNLL

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (steps * BATCH, 784), generator=g, dtype=torch.uint8).to(device)
    model = TextbookVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    logits0, x0 = (
        torch.randn(BATCH, 784, generator=g).to(device),
        torch.rand(BATCH, 784, generator=g).to(device),
    )

    def step(i: int, adam: bool = True) -> None:
        floor_step(model, optimizer, images[i * BATCH : (i + 1) * BATCH].float().div_(255), adam)

    def loss_only(nll: Callable) -> Callable[[int], None]:
        def run(i: int) -> None:
            logits = logits0.clone().requires_grad_()
            nll(logits, x0).sum().backward()

        return run

    def bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)

    variants = {
        "step": step,
        "no_adam": partial(step, adam=False),
        "nll": loss_only(BernoulliNLL.apply),  # vae's Bernoulli NLL, forward + backward
        "bce": loss_only(bce),  # binary_cross_entropy_with_logits, forward + backward
        "binarize": lambda i: prepare_batch(images[:BATCH], "dynamic"),  # vae's dynamic binarisation
        "bernoulli": lambda i: torch.bernoulli(images[:BATCH].float().div_(255)),  # torch's
    }
    best = dict.fromkeys(variants, math.inf)
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            for i in range(steps):
                run(i)
            synchronize(device)
            best[name] = min(best[name], (time.perf_counter() - start) / steps * 1e3)
    return best


def stock_conv_model(model: nn.Module) -> nn.Module:
    """A copy of vae's conv model with every layer set back to the stock PyTorch op (`fast = False`:
    nn.Conv2d / nn.ConvTranspose2d on the input as it comes, NCHW-contiguous): the model before the
    formulations of vae_cli/models/conv.py, with the same weights."""
    import copy

    from vae_cli.models.conv import StridedConv, StridedConvTranspose

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, StridedConv | StridedConvTranspose):
            m.fast = False
    return model


def conv_anatomy(device: torch.device, shape: tuple[int, int, int], rounds: int = 8) -> dict:
    """Where the conv model's step goes, at batch 128 on images of `shape`: each conv layer's forward +
    backward (weight, bias and, but for the first, input gradients) as vae runs it and as the stock op ran
    it (NCHW-contiguous), and the whole training step (ELBO forward and backward, fused Adam) of both
    models, interleaved round by round and each one's best round kept; FLOPs by FlopCounterMode."""
    from vae_cli.config import LossConfig
    from vae_cli.config.models import ConvConfig
    from vae_cli.likelihoods import create_likelihood
    from vae_cli.models import create_model
    from vae_cli.models.conv import StridedConv, StridedConvTranspose
    from vae_cli.objectives import elbo_terms

    torch.manual_seed(0)
    likelihood = create_likelihood(LossConfig(name="bernoulli"))
    model = create_model(ConvConfig(), shape, 20, likelihood).to(device)
    old = stock_conv_model(model)
    x = torch.rand(BATCH, *shape, device=device)

    inputs: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a: inputs.append((m, a[0].detach().contiguous())))
        for m in old.modules()
        if isinstance(m, StridedConv | StridedConvTranspose)
    ]
    with torch.no_grad():
        old.decode(old.encode(x)[0])
    for h in hooks:
        h.remove()

    def layer_step(m: nn.Module, inp: torch.Tensor, grad: torch.Tensor, first: bool) -> Callable[[], None]:
        def run() -> None:
            y = m(inp.detach().requires_grad_(not first))
            y.backward(grad)
            m.zero_grad(set_to_none=True)

        return run

    layers, variants = [], {}
    for i, (m, inp) in enumerate(inputs):
        fast = copy_layer(m, fast=True)
        with FlopCounterMode(display=False) as counter:
            out = m(inp.detach().requires_grad_(i > 0))
            out.backward(torch.ones_like(out))
        m.zero_grad(set_to_none=True)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(i)).to(device)
        kind = "conv" if isinstance(m, nn.Conv2d) else "convT"
        layers.append(
            {
                "name": f"{kind} {m.in_channels}->{m.out_channels}",
                "shape": f"{'x'.join(map(str, inp.shape[1:]))} -> {'x'.join(map(str, out.shape[1:]))}",
                "flops": counter.get_total_flops(),
            }
        )
        variants[("stock", i)] = layer_step(m, inp, grad, i == 0)
        # in vae's model every layer but the first gets its input, and all but the last their gradient,
        # channels-last from the layer before
        cl = partial(torch.Tensor.contiguous, memory_format=torch.channels_last)
        last = i == len(inputs) - 1
        variants[("vae", i)] = layer_step(
            fast, inp if i == 0 else cl(inp), grad if last else cl(grad), i == 0
        )

    def model_step(net: nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))

        def run() -> None:
            loss = elbo_terms(net, x).loss(1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    variants[("stock", "step")], variants[("vae", "step")] = model_step(old), model_step(model)
    variants[("matmul", "m")] = matmul_step(device)  # (m) in the same rounds: the rate to compare with
    best, reps = dict.fromkeys(variants, math.inf), {}
    for key, run in variants.items():  # warm-up (oneDNN builds its kernels on a shape's first call), and
        run()  # enough repetitions for ~20 ms a round
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        reps[key] = max(1, min(10, round(0.02 / (time.perf_counter() - start))))
    for _ in range(rounds):
        for key, run in variants.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(reps[key]):
                run()
            synchronize(device)
            best[key] = min(best[key], (time.perf_counter() - start) / reps[key])
    for i, layer in enumerate(layers):
        layer["stock"], layer["vae"] = best[("stock", i)], best[("vae", i)]
    return {
        "shape": shape,
        "layers": layers,
        "step": {"stock": best[("stock", "step")], "vae": best[("vae", "step")]},
        "step_flops": count_flops(old, device) * BATCH,  # the stock ops' FLOPs, as for every conv figure
        "matmul_gflops": MLP_FLOPS * BATCH / best[("matmul", "m")] / 1e9,
    }


def copy_layer(m: nn.Module, fast: bool) -> nn.Module:
    import copy

    m = copy.deepcopy(m)
    m.fast = fast
    return m


def conv_anatomy_table(anatomy: dict) -> Table:
    shape, matmul_gflops = "x".join(map(str, anatomy["shape"])), anatomy["matmul_gflops"]
    table = Table(
        title=f"conv model anatomy, {shape} images, batch {BATCH}: each layer's forward + backward, the stock "
        f"op (NCHW) against vae's (vae_cli/models/conv.py); of (m): of the matmul rate at the MLP's shapes "
        f"measured in the same rounds, {matmul_gflops:.0f} GFLOP/s"
    )
    for col in (
        "layer",
        "in -> out",
        "MFLOP",
        "stock ms",
        "GFLOP/s",
        "of (m)",
        "vae ms",
        "GFLOP/s",
        "of (m)",
        "speed-up",
    ):
        table.add_column(col, justify="left" if col in ("layer", "in -> out") else "right")

    def cells(flops: float, seconds: float) -> list[str]:
        rate = flops / seconds / 1e9
        return [f"{seconds * 1e3:.2f}", f"{rate:.0f}", f"{math.floor(100 * rate / matmul_gflops)}%"]

    for layer in anatomy["layers"]:
        table.add_row(
            layer["name"], layer["shape"], f"{layer['flops'] / 1e6:.0f}",
            *cells(layer["flops"], layer["stock"]), *cells(layer["flops"], layer["vae"]),
            f"{layer['stock'] / layer['vae']:.2f}x",
        )  # fmt: skip
    total = sum(layer["flops"] for layer in anatomy["layers"])
    stock, vae = (sum(layer[k] for layer in anatomy["layers"]) for k in ("stock", "vae"))
    table.add_row(
        "conv layers",
        "",
        f"{total / 1e6:.0f}",
        *cells(total, stock),
        *cells(total, vae),
        f"{stock / vae:.2f}x",
    )
    step = anatomy["step"]
    table.add_row(
        "training step", "ELBO + Adam", f"{anatomy['step_flops'] / 1e6:.0f}",
        *cells(anatomy["step_flops"], step["stock"]), *cells(anatomy["step_flops"], step["vae"]),
        f"{step['stock'] / step['vae']:.2f}x",
    )  # fmt: skip
    return table


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


def print_row(r: dict) -> None:
    console.print(
        f"{r['name']}: {r['n']:,} examples, epochs {' '.join(f'{t:.2f}' for t in r['times'])} s, "
        f"test -ELBO {r['test']:.2f}"
    )


def floor2(x: float) -> float:
    """Rounded down to 2 decimals: a 2.996x that misses a 3x target never prints as 3.00x."""
    return math.floor(x * 100) / 100


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
            f"{floor2(base['epoch'] / r['epoch']):.2f}x",
            f"{r['flops'] / 1e6:.2f}",
            f"{r['gflops']:.1f}",
            f"{math.floor(100 * r['gflops'] / matmul_gflops)}%",
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
(b) vae: vae_cli.training.loop.train with Hydra's config for `vae train dataset=fashion_mnist dataset.binarize=none
    model=mlp model.hidden_dims=[400] latent_dim=20 train.batch_size=128 loss=bernoulli` (conv: model=conv)
(c) floor: vae's kernels (index_select, the Bernoulli NLL, fused Adam) in a bare hand-written loop
(m) torch.matmul alone at the MLP's forward and backward shapes: the time its matrix products need
best: the fastest epoch; vs (a): epoch time of (a) / this row's; GFLOP/s: matrix-product FLOPs of forward
and backward per second; of (m): that against (m); test -ELBO: nats per example on the 10k test set, the
one scoring function for every row (vae's own evaluation in brackets)"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each MLP loop (default 5)")
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
        "--variants",
        default="bf16,compile",
        help=f"extra vae MLP rows, comma-separated, from {', '.join(VARIANTS)} (default bf16,compile; '' for none)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch of each on a 6k/1k subset")
    parser.add_argument("--no-anatomy", action="store_true", help="skip the breakdown of the floor's step")
    parser.add_argument(
        "--conv-anatomy",
        default="1x28x28,3x64x64",
        help="image shapes (CxHxW, comma-separated) for the conv model's per-layer anatomy "
        "(default 1x28x28,3x64x64; '' for none; --no-anatomy skips it too)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown --variants {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    try:  # checked now, not after minutes of benchmarking
        conv_shapes = [
            tuple(int(d) for d in spec.lower().split("x")) for spec in args.conv_anatomy.split(",") if spec
        ]
        assert all(len(shape) == 3 and min(shape) >= 1 for shape in conv_shapes)
    except (ValueError, AssertionError):
        parser.error(
            f"--conv-anatomy {args.conv_anatomy!r}: give image shapes as CxHxW, e.g. 1x28x28,3x64x64"
        )
    if args.quick:
        args.epochs, args.conv_epochs = 1, min(args.conv_epochs, 1)

    torch.set_num_threads(args.threads or available_cores())
    device = torch.device(args.device)
    console.print(
        f"[bold]vae training benchmark[/bold]: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device}, CPU {cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}"
    )
    # what decides the bf16 row: without native bf16 (avx512_bf16/amx_bf16) it is emulated, several times slower
    features = cpu_features()
    console.print(f"CPU features: {describe_cpu_features(features)}", highlight=False)
    if "bf16" in variants and features["native_bf16"] is False:
        console.print(
            "note: no native bf16 on this CPU: expect the bf16 row to be slower than fp32", highlight=False
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

        # The textbook rows' epochs run between vae's fp32 MLP epochs, round by round, so a slow spell on
        # a shared machine slows every row of the comparison alike; the other vae rows follow.
        feeds = [("(a) textbook", "dataloader")]
        if not args.no_ladder:
            feeds += [("(a2) TensorDataset", "tensordataset"), ("(a3) sliced tensor", "sliced")]
        feeds.append(("(c) floor", "floor"))
        textbook_rows = [
            TextbookRow(name, feed, root=textbook_root, device=device, seed=args.seed) for name, feed in feeds
        ]

        def textbook_round() -> None:
            for row in textbook_rows:
                row.epoch()

        vae = partial(run_vae, root=root, device=device, test=test, seed=args.seed)
        mlp = vae("(b) vae mlp", config("mlp", args.epochs, []), between=textbook_round)
        rows = [row.result(test, args.seed) for row in textbook_rows] + [mlp]
        plan = [partial(vae, f"(b) vae mlp {v}", config("mlp", args.epochs, VARIANTS[v])) for v in variants]
        if args.conv_epochs:
            plan.append(partial(vae, "(b) vae conv", config("conv", args.conv_epochs, [])))
        for r in rows:
            print_row(r)
        for run in plan:
            name = run.args[0]
            try:
                rows.append(run())
            except Exception as e:  # an optional row (a variant, conv) that fails is reported, not fatal
                console.print(f"[red]{name} failed[/]: {type(e).__name__}: {e}", highlight=False)
                continue
            print_row(rows[-1])

        matmul_after = matmul_benchmark(device, matmul_seconds)
        console.print(f"(m) again, after the loops: {matmul_after:.1f} GFLOP/s")

    matmul_gflops = max(matmul_before, matmul_after)
    console.print(report(rows, matmul_gflops))
    console.print(LEGEND, highlight=False)
    if not args.no_anatomy:
        anatomy = step_anatomy(device)
        matmul_ms = MLP_FLOPS * BATCH / (matmul_gflops * 1e9) * 1e3
        step, no_adam = anatomy["step"], anatomy["no_adam"]
        console.print(
            f"anatomy of the floor's step (ms, best of interleaved rounds): whole step {step:.2f}; Adam "
            f"{step - no_adam:.2f}; the matrix products at (m)'s rate {matmul_ms:.2f}; everything else "
            f"{no_adam - matmul_ms:.2f}, of which vae's Bernoulli NLL {anatomy['nll']:.3f} (forward and "
            f"backward; binary_cross_entropy_with_logits takes {anatomy['bce']:.3f}); dynamic binarisation "
            f"of a batch {anatomy['binarize']:.3f} (torch.bernoulli: {anatomy['bernoulli']:.3f})",
            highlight=False,
        )
        for shape in conv_shapes:
            console.print(conv_anatomy_table(conv_anatomy(device, shape)))
    textbook_row, mlp = rows[0], next(r for r in rows if r["name"] == "(b) vae mlp")
    speedup, share = textbook_row["epoch"] / mlp["epoch"], mlp["gflops"] / matmul_gflops
    checks = [
        (
            f"vae's MLP epoch {floor2(speedup):.2f}x faster than the textbook loop's "
            f"(target >= {TARGET_SPEEDUP:g}x)",
            speedup >= TARGET_SPEEDUP,
        ),
        (
            f"vae's MLP test -ELBO {mlp['test']:.2f} against the textbook's {textbook_row['test']:.2f} "
            f"(target: equal, within {QUALITY_TOLERANCE} nats, or better)",
            mlp["test"] <= textbook_row["test"] + QUALITY_TOLERANCE,
        ),
        (
            f"vae's MLP at {math.floor(100 * share)}% of the matmul micro-benchmark's GFLOP/s "
            f"(target >= {100 * TARGET_MATMUL_SHARE:.0f}%)",
            share >= TARGET_MATMUL_SHARE,
        ),
    ]
    for text, ok in checks:
        console.print(f"{'[green]PASS[/]' if ok else '[red]MISS[/]'} {text}")
    for r in rows:
        if r["name"].startswith("(b) vae mlp "):  # the variants, for comparison with the targets
            console.print(
                f"     {r['name']}: {floor2(textbook_row['epoch'] / r['epoch']):.2f}x the textbook loop, "
                f"{math.floor(100 * r['gflops'] / matmul_gflops)}% of the fp32 matmul rate, test -ELBO {r['test']:.2f}",
                highlight=False,
            )
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
