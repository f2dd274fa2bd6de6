"""The `model` group: one schema per architecture (`vae train model=<name>`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from vae_cli.config.fields import GroupBase, key, option

#: the names vae_cli.models.registry.ACTIVATIONS builds (a test keeps the two equal)
ACTIVATIONS = ("elu", "gelu", "leaky_relu", "relu", "silu", "tanh")
NAME = "the architecture, chosen with model=<name>"
SIZES = (lambda v: len(v) > 0 and all(d >= 1 for d in v), "must be a non-empty list of sizes >= 1")


def _activation(default: str) -> str:
    return key(default, "the nonlinearity between layers", choices=ACTIVATIONS)


def _kernel_size() -> int:
    return key(4, "the stride-2 convolutions' kernel size", min=2)


@dataclass
class ModelConfig(GroupBase):
    """The keys every architecture has."""

    group = "model"

    name: str = key(MISSING, NAME)
    activation: str | None = _activation("relu")  # Optional for model=auto, whose null is the picked one's


@option("model", "auto")
@dataclass
class AutoModelConfig(ModelConfig):
    """The default: conv for images, mlp (sized from the number of features) for vectors, picked once the
    data is read (vae_cli/config/auto.py). Choose model=<name> to set an architecture's keys."""

    name: str = key("auto", NAME)
    activation: str | None = key(
        None, "the nonlinearity between layers; null: the picked architecture's", choices=ACTIVATIONS
    )


@option("model", "mlp")
@dataclass
class MlpConfig(ModelConfig):
    """Fully connected encoder and decoder; the decoder mirrors hidden_dims."""

    name: str = key("mlp", NAME)
    activation: str = _activation("relu")
    hidden_dims: list[int] | None = key(
        None,
        "the encoder's hidden layer widths, e.g. [400]; null (auto): [512, 256] for images, sized from the "
        "number of features for vectors",
        check=SIZES,
    )
    dropout: float | None = key(
        None,
        "the dropout rate after each hidden layer; null (auto): 0 for images, 0.1 for vectors",
        min=0,
        lt=1,
        rule="must be in [0, 1), or null for automatic",
    )


@option("model", "conv")
@dataclass
class ConvConfig(ModelConfig):
    """Strided-conv encoder, transposed-conv decoder: one stride-2 layer per entry of channels."""

    name: str = key("conv", NAME)
    activation: str = _activation("leaky_relu")
    channels: list[int] = key(
        [32, 64, 128, 256], "the encoder's channels, one stride-2 layer each", check=SIZES
    )
    kernel_size: int = _kernel_size()


@option("model", "resnet")
@dataclass
class ResnetConfig(ModelConfig):
    """Residual conv encoder and decoder with GroupNorm (per example: nothing leaks across the batch):
    one residual block and one stride-2 layer per entry of channels."""

    name: str = key("resnet", NAME)
    activation: str = _activation("silu")
    channels: list[int] = key(
        [32, 64], "the encoder's channels, one residual block and stride-2 layer each", check=SIZES
    )
    kernel_size: int = _kernel_size()
