"""The cost of `vae evaluate iwae_k=5000` on the MNIST test set against that of its matrix products alone,
in one process on this machine.

    .venv/bin/python benchmarks/evaluate.py            # what `make bench-evaluate` runs (~8 min, shared 2 cores)
    .venv/bin/python benchmarks/evaluate.py --quick    # smoke run: 64 images, k=500, 2 rounds, no variants
    .venv/bin/python benchmarks/evaluate.py --ckpt outputs/mnist/best --variants ''   # a trained model

The model is that of `vae train experiment=binary28_best dataset=mnist`: the 784-512-256-32 MLP with a
Bernoulli likelihood, built by the registries from the config Hydra composes for it, with untrained
weights (the time does not depend on them), or the model of a training run given with `--ckpt`. The
images are the first `--images` of the MNIST test split (`data/MNIST/raw`, or $VAE_DATA_DIR; installed by
`../shared/tools/install-mnist data`), binarised as the run's config says, or, where MNIST is not found,
synthetic binary images of the same shape.

Two things are timed, alternately, round by round (the machine is shared: a slow spell then slows both,
and each one's best round is kept):

  (e) evaluate: what `vae evaluate iwae_k=<k>` runs for those images, `vae_cli.estimators.estimate_split`
      with its defaults (batch 256, the automatic chunk of draws, seed 0, recon_error): per batch the
      encoder once, then per chunk of draws z ~ q(z|x) and log p(z) - log q(z|x)
      (`draws_and_log_ratio`), the decoder, the likelihood's log p(x|z), and at the end the log-sum-exp
      over the k draws; the KL per dimension and the mean code's reconstruction.
  (m) its matrix products alone: every torch.mm / addmm / bmm that (e) calls (nn.Linear's included: an
      addmm on the flattened input), in the same order and at the same shapes, strides and dtypes
      (recorded from a first, untimed run of (e) by a TorchDispatchMode), on stand-in tensors made once,
      nothing else: the encoder's once per batch, the decoder's for each chunk of draws.

The summary gives both times for the images timed and extrapolated linearly to the 10,000 test images
(an extrapolation, not a measurement of the full set, which takes many minutes on a 2-core CPU), their
ratio (the target: at most 2), and each one's GFLOP/s (the matrix products' FLOPs, 2 m k n per product,
over the time). `--variants` repeats (e)/(m) for prior=vamp and posterior=iaf (the prior's log density
of every draw; the flow's steps) and for experiment=mnist_best's model (the VampPrior with the
autoregressive Bernoulli, whose pixel-to-pixel product is one more matrix product per chunk), with `--variant-k` draws, at the same shapes per pass. Torch's threads
are those `vae evaluate` runs with (torch's default, OMP_NUM_THREADS if set) unless `--threads` is given.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

from vae_cli.console import cpu_name, quiet  # noqa: E402
from vae_cli.data.base import ImageSplit, Split  # noqa: E402
from vae_cli.errors import VaeError  # noqa: E402
from vae_cli.estimators import estimate_split  # noqa: E402
from vae_cli.models import VAE  # noqa: E402

TEST_IMAGES = 10_000  # MNIST's test split: what the extrapolation is to
RECIPE = ["experiment=binary28_best", "dataset=mnist"]
VARIANTS = {
    "vamp": ["prior=vamp"],
    "iaf": ["posterior=iaf"],
    "best": ["prior=vamp", "loss.autoregressive=true"],  # experiment=mnist_best's model
}
TARGET_RATIO = 2.0
BATCH, SEED = 256, 0  # vae evaluate's defaults

console = Console() if sys.stdout.isatty() else Console(width=120)
aten = torch.ops.aten
MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
#: composite ops that reach a dispatch mode whole: run through their decomposition (what eager runs
#: beneath them: linear is addmm on the flattened input), so that the products inside are seen
COMPOSITES = {aten.linear.default, aten.matmul.default, aten.einsum.default, aten.tensordot.default}


# ---------------------------------------------------------------------------------- model and data


@dataclass
class Subject:
    """A model and the images it is evaluated on, as `vae evaluate` would see them."""

    name: str
    model: VAE
    split: Split
    binarize: str
    source: str


def mnist_folder(data_dir: Path) -> Path | None:
    folder = data_dir / "MNIST" / "raw"
    return folder if folder.is_dir() and any(folder.glob("t10k-images*")) else None


def synthetic_split(n: int, seed: int) -> ImageSplit:
    """n binary 28x28 images (0 or 255), each pixel on with probability 0.13, MNIST's mean intensity."""
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(((torch.rand(n, 1, 28, 28, generator=g) < 0.13) * 255).to(torch.uint8))


def recipe_subject(name: str, extra: list[str], args: argparse.Namespace) -> Subject:
    """The recipe's model (untrained weights, seeded) and the first `--images` test images."""
    from vae_cli.config.compose import compose_config
    from vae_cli.data import create_dataset
    from vae_cli.likelihoods import create_likelihood
    from vae_cli.models import create_model

    use_mnist = args.data == "mnist" or (args.data == "auto" and mnist_folder(args.data_dir) is not None)
    if args.data == "mnist" and mnist_folder(args.data_dir) is None:
        raise SystemExit(
            f"--data mnist: no MNIST in {args.data_dir}/MNIST/raw: run ../shared/tools/install-mnist data"
        )
    cfg = compose_config([*RECIPE, *extra, f"data_dir={args.data_dir}", "dataset.download=false"])
    torch.manual_seed(args.seed)
    likelihood = create_likelihood(cfg.loss)
    model = create_model(cfg.model, (1, 28, 28), cfg.latent_dim, likelihood, cfg.prior, cfg.posterior)
    if use_mnist:
        data = create_dataset(cfg.dataset, cfg.data_dir)
        split, binarize = data.test, data.binarize
        source = f"MNIST test split ({mnist_folder(args.data_dir)}, dataset.binarize={binarize})"
    else:
        split, binarize = synthetic_split(args.images, args.seed), "none"
        source = "synthetic binary 28x28 images (MNIST not found)"
    return Subject(name, model.eval(), first(split, args.images), binarize, source)


def checkpoint_subject(args: argparse.Namespace) -> Subject:
    """The model of a training run (`--ckpt`) and the first `--images` images of its test split."""
    from vae_cli.api import read_checkpoint
    from vae_cli.data import create_dataset

    trained = read_checkpoint(args.ckpt, "cpu")
    data = create_dataset(trained.dataset, args.data_dir)
    source = f"{data.name} test split of {trained.path} (dataset.binarize={data.binarize})"
    return Subject(f"--ckpt {args.ckpt}", trained.model, first(data.test, args.images), data.binarize, source)


def first(split: Split, n: int) -> Split:
    return split.subset(torch.arange(min(n, len(split))))


def architecture(model: VAE) -> str:
    """`784-512-256-32 MLP, Bernoulli` for the recipe's model."""
    sizes = [m.in_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    net = "-".join(map(str, [*sizes, model.latent_dim])) + " MLP" if sizes else type(model.encoder).__name__
    return f"{net}, {type(model.likelihood).__name__} likelihood, prior={type(model.prior).__name__}"


# ------------------------------------------------------------------------------ the two measurements


class MatmulRecorder(TorchDispatchMode):
    """Records every matrix product (aten mm, addmm, bmm, baddbmm) run inside it: the op and its
    arguments' shapes, strides and dtypes, in order; linear, matmul and einsum are decomposed into them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS:
            spec = tuple(
                (tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a
                for a in args
            )
            self.calls.append((func, spec, tuple(sorted(kwargs.items()))))
        elif func in COMPOSITES:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


def product_flops(func, spec: tuple) -> int:
    """2 m k n per product (times the batch for bmm): the multiply-adds, not the bias."""
    a, b = spec[-2][0], spec[-1][0]  # (.., m, k) and (.., k, n), the last two tensor arguments
    return 2 * math.prod(a) * b[-1]


@dataclass
class MatmulReplay:
    """(m): the recorded products, in order, on stand-ins made once per distinct shape and stride."""

    calls: list[tuple]
    stand_ins: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.plan = []
        for func, spec, kwargs in self.calls:
            args = []
            for a in spec:
                if isinstance(a, tuple) and len(a) == 3 and isinstance(a[2], torch.dtype):
                    if a not in self.stand_ins:
                        shape, stride, dtype = a  # (strides may be 0: an expanded tensor)
                        storage = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True))
                        values = torch.randn(storage, generator=g, dtype=dtype)
                        self.stand_ins[a] = values.as_strided(shape, stride)
                    args.append(self.stand_ins[a])
                else:
                    args.append(a)
            self.plan.append((func, tuple(args), dict(kwargs)))
        self.flops = sum(product_flops(func, spec) for func, spec, _ in self.calls)

    @torch.inference_mode()
    def __call__(self) -> None:
        for func, args, kwargs in self.plan:
            func(*args, **kwargs)


def evaluate_run(subject: Subject, k: int) -> Callable[[], None]:
    """(e): estimate_split as `vae evaluate` calls it, with its defaults."""

    def run() -> None:
        with quiet():
            estimate_split(
                subject.model,
                subject.split,
                binarize=subject.binarize,
                k=k,
                seed=SEED,
                batch_size=BATCH,
                recon_error=True,
            )

    return run


@dataclass
class Timing:
    name: str
    images: int
    k: int
    flops: int
    evaluate: list[float]
    matmul: list[float]

    @property
    def ratio(self) -> float:
        return min(self.evaluate) / min(self.matmul)


def measure(subject: Subject, k: int, rounds: int) -> Timing:
    """The first run of (e) records its products (and warms up); then `rounds` rounds of (e), (m)."""
    run = evaluate_run(subject, k)
    recorder = MatmulRecorder()
    with recorder:
        run()
    replay = MatmulReplay(recorder.calls)
    replay()  # warm-up
    times: dict[str, list[float]] = {"evaluate": [], "matmul": []}
    for _ in range(rounds):
        for name, what in (("evaluate", run), ("matmul", replay)):
            start = time.perf_counter()
            what()
            times[name].append(time.perf_counter() - start)
    return Timing(subject.name, len(subject.split), k, replay.flops, times["evaluate"], times["matmul"])


# ------------------------------------------------------------------------------------------ report


def report(rows: list[Timing]) -> Table:
    table = Table(title="vae evaluate against its matrix products alone, best of interleaved rounds")
    columns = (
        "",
        "images x k",
        "evaluate",
        "matmuls",
        "ratio",
        "GFLOP/s",
        f"{TEST_IMAGES:,} images (extrapolated)",
        "rounds (s)",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("", "rounds (s)") else "right")
    for r in rows:
        e, m = min(r.evaluate), min(r.matmul)
        scale = TEST_IMAGES / r.images
        colour = "green" if r.ratio <= TARGET_RATIO else "red"
        table.add_row(
            r.name,
            f"{r.images:,} x {r.k:,}",
            f"{e:.2f} s",
            f"{m:.2f} s",
            f"[{colour}]{r.ratio:.2f}x[/]",
            f"{r.flops / e / 1e9:.0f} / {r.flops / m / 1e9:.0f}",
            f"{duration(e * scale)} / {duration(m * scale)}",
            "  ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(r.evaluate, r.matmul, strict=True)),
        )
    return table


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="test images timed (default 256: one batch)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per image (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each (default 3)")
    parser.add_argument(
        "--variants",
        default="vamp,iaf,best",
        help=f"extra rows, comma-separated, from {', '.join(VARIANTS)} (default all; '' for none)",
    )
    parser.add_argument(
        "--variant-k", type=int, default=1000, help="importance samples of the variants (1000)"
    )
    parser.add_argument("--ckpt", help="time this training run's model (a run folder or .ckpt) instead")
    parser.add_argument(
        "--data",
        choices=("auto", "mnist", "synthetic"),
        default="auto",
        help="auto (default): MNIST when data/MNIST/raw is found, else synthetic binary images",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("VAE_DATA_DIR", REPO / "data")), help="data_dir"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: vae evaluate's, torch's default)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 64 images, k=500, 2 rounds, no variants"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the untrained weights (0)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown --variants {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    if args.ckpt and variants:
        parser.error("--ckpt times that run's model only: add --variants ''")
    if min(args.images, args.k, args.rounds, args.variant_k) < 1:
        parser.error("--images, --k, --rounds and --variant-k must be at least 1")
    if args.quick:
        args.images, args.k, args.rounds, variants = min(args.images, 64), min(args.k, 500), 2, []
    if args.threads:
        torch.set_num_threads(args.threads)

    console.print(
        f"[bold]vae evaluate benchmark[/bold]: torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), CPU "
        f"{cpu_name()} ({os.cpu_count()} cores), load average "
        f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    try:
        main_subject = checkpoint_subject(args) if args.ckpt else recipe_subject("binary28_best", [], args)
    except VaeError as e:  # a bad --ckpt or data folder: one line, as vae says it
        raise SystemExit(f"error: {e}") from None
    console.print(
        f"model: {architecture(main_subject.model)}, posterior={type(main_subject.model.posterior).__name__}"
    )
    console.print(f"data: {main_subject.source}, first {len(main_subject.split):,} images", highlight=False)
    rows = [measure(main_subject, args.k, args.rounds)]
    console.print(report(rows))
    for v in variants:
        subject = recipe_subject(f"+ {' '.join(VARIANTS[v])}", VARIANTS[v], args)
        rows.append(measure(subject, args.variant_k, args.rounds))
    if variants:
        console.print(report(rows))
    main_row = rows[0]
    verdict = "[green]PASS[/]" if main_row.ratio <= TARGET_RATIO else "[red]MISS[/]"
    console.print(
        f"{verdict} evaluate takes {main_row.ratio:.2f}x the time of its matrix products (target: at most "
        f"{TARGET_RATIO:.0f}x); times at {TEST_IMAGES:,} images are extrapolated from {main_row.images:,}; "
        f"load average now {os.getloadavg()[0]:.1f}",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
