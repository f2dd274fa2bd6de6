"""benchmarks/evaluate.py (`make bench-evaluate`): that its bare matrix products are exactly those of
`vae evaluate`'s estimator, on a tiny model. The benchmark itself takes minutes on two cores and is not
part of the suite: `make bench-evaluate ARGS=--quick` runs it."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from tests.helpers.cli import REPO
from vae_cli.config.models import MlpConfig
from vae_cli.likelihoods import Bernoulli
from vae_cli.models import create_model


@pytest.fixture(scope="module")
def bench():
    name = "vae_bench_evaluate"
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (its dataclasses look their module up there)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def test_the_matmuls_are_the_encoders_once_and_the_decoders_per_chunk(bench) -> None:
    """10 images of 4x4 pixels, a 16-16-8-3 MLP, k=7 draws in one chunk: the encoder's three products
    on 10 rows, the decoder's on 7 * 10 rows (the draws) and on 10 (the mean code's reconstruction)."""
    torch.manual_seed(0)
    model = create_model(MlpConfig(hidden_dims=[16, 8]), (1, 4, 4), 3, Bernoulli()).eval()
    split = bench.synthetic_split(10, 0)
    split.images = split.images[:, :, :4, :4].contiguous()
    timing = bench.measure(bench.Subject("tiny", model, split, "none", "synthetic"), k=7, rounds=1)
    encoder = 16 * 16 + 16 * 8 + 8 * 6
    decoder = 3 * 8 + 8 * 16 + 16 * 16
    assert timing.flops == 2 * (10 * encoder + 70 * decoder + 10 * decoder)
    assert len(timing.evaluate) == len(timing.matmul) == 1 and timing.ratio > 0


def test_an_expanded_operand_is_replayed_with_its_strides(bench) -> None:
    recorder = bench.MatmulRecorder()
    with recorder:
        torch.mm(torch.randn(1, 3).expand(4, 3), torch.randn(3, 2))  # stride (0, 1): one row, 4 times
        torch.nn.functional.linear(torch.randn(2, 5, 3), torch.randn(6, 3))  # (2, 5, 3) -> mm on 10 rows
    (mm, spec, _), (linear, linear_spec, _) = recorder.calls
    assert spec[0][1] == (0, 1) and linear_spec[0][0] == (10, 3)
    replay = bench.MatmulReplay(recorder.calls)
    replay()
    assert replay.flops == 2 * 4 * 3 * 2 + 2 * 10 * 3 * 6
