"""The `model` group: one schema per architecture (`vae train model=<name>`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from vae_cli.config.fields import GroupBase, check, key, option
from vae_cli.errors import ConfigError

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
    conditional: bool = key(
        False,
        "a conditional VAE (Sohn et al. 2015): the label, one-hot, joins the encoder's input and the "
        "decoder's code (the prior stays p(z)); needs labelled data; vae sample label=<class>, mode=classes",
    )


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


@option("model", "ladder")
@dataclass
class LadderConfig(ModelConfig):
    """The ladder VAE (Sønderby et al. 2016): two or more stochastic layers, generated top-down and
    inferred top-down (each layer's posterior combines a bottom-up Gaussian with the layer above's
    top-down one). latent_dim is the top layer's size, where the prior (prior=<name>) and the posterior
    (posterior=<name>) apply; model.layers lists the layers below it. The code is every layer's draw,
    concatenated bottom first."""

    name: str = key("ladder", NAME)
    activation: str = _activation("elu")
    layers: list[int] = key(
        [64],
        "the stochastic layers' sizes below the top one (latent_dim), bottom first: [64] is a two-layer "
        "ladder",
        check=(
            lambda v: len(v) > 0 and all(d >= 1 for d in v),
            "must list at least one layer below the top one (a ladder has two or more stochastic layers), "
            "each of size >= 1, e.g. [64]",
        ),
    )
    hidden_dims: list[int] | None = key(
        None,
        "each stochastic layer's deterministic width, bottom first, one per layer (two dense layers each, "
        "bottom-up and top-down); null: 512 at the bottom, halving up each layer",
        check=SIZES,
    )
    form: str = key(
        "mlp",
        "mlp: dense blocks throughout; conv: the bottom block is the conv encoder and decoder "
        "(model.channels), the layers above dense",
        choices=("mlp", "conv"),
    )
    channels: list[int] = key(
        [32, 64], "form=conv: the bottom block's channels, one stride-2 layer each", check=SIZES
    )
    kernel_size: int = _kernel_size()
    batchnorm: bool = key(
        False,
        "batch normalisation after each dense layer of the blocks (bottom-up, top-down and the decoder's), "
        "as Sønderby et al. train their ladders; evaluation uses the running statistics",
    )


# --- model=vqvae: a sibling of the VAE (vae_cli/models/vqvae.py), its own objective and code prior -------


@option("model", "vqvae")
@dataclass
class VqvaeConfig(ModelConfig):
    """VQ-VAE (van den Oord et al. 2017): the conv encoder's grid of code_dim-dimensional vectors, each
    replaced by its nearest of codebook_size codebook entries (the straight-through gradient to the
    encoder), the transposed-conv decoder. Trained with objective=vq (chosen for it): the reconstruction,
    the commitment loss and, with codebook_update=loss, the codebook loss; with codebook_update=ema the
    codebook follows moving averages of its encodings (VQ-VAE-2). A second stage of the same `vae train`
    fits an autoregressive prior over the code grid (a small causal transformer) on the training set's
    codes, which `vae sample` draws from. The posterior is deterministic: KL = -log p(z_q)."""

    name: str = key("vqvae", NAME)
    activation: str = _activation("relu")
    channels: list[int] = key(
        [32, 64],
        "the encoder's channels, one stride-2 layer each: the code grid is the image halved per layer",
        check=SIZES,
    )
    kernel_size: int = _kernel_size()
    codebook_size: int = key(512, "K, the codebook's entries", min=2)
    code_dim: int = key(64, "D, each code vector's size (the encoder's output channels)", min=1)
    commitment: float = key(
        0.25, "beta of the commitment loss beta * ||z_e - sg(z_q)||^2, the encoder's pull to its code", min=0
    )
    codebook_update: str = key(
        "ema",
        "ema: the codebook is the moving average of the encodings assigned to each entry (VQ-VAE-2) | loss: "
        "learned by the codebook loss ||sg(z_e) - z_q||^2",
        choices=("ema", "loss"),
    )
    ema_decay: float = key(0.99, "codebook_update=ema: the moving averages' decay gamma", gt=0, lt=1)
    restart_after: int = key(
        100,
        "a codebook entry no encoding chose for this many training steps is reset to a random encoding of "
        "the batch (dead codes restarted); 0 never restarts",
        min=0,
    )
    prior_epochs: int = key(
        10, "stage two: passes of the code prior over the training set's codes; 0 keeps it uniform", min=0
    )
    prior_lr: float = key(1e-3, "stage two: the code prior's learning rate (Adam)", gt=0)
    prior_layers: int = key(2, "the code prior's transformer blocks", min=1)
    prior_width: int = key(
        64, "the code prior's model width (a multiple of prior_heads); its cost grows with its square", min=1
    )
    prior_heads: int = key(4, "the code prior's attention heads", min=1)

    #: keys that train the code prior and define nothing it has learnt: a resumed run may change them
    training_keys = ("prior_epochs", "prior_lr")

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        """The training keys (`cfg`, the whole training config) model=vqvae cannot serve, each refused in one
        line."""
        vq = "model=vqvae"
        if cfg.objective.name not in ("elbo", "vq"):
            raise ConfigError(
                f"objective={cfg.objective.name} does not train {vq}: its posterior is deterministic (no "
                f"draws, no log q) and it trains by reconstruction and codebook/commitment losses, "
                f"objective=vq (chosen for it): drop objective={cfg.objective.name}"
            )
        for group, default in (("prior", "standard"), ("posterior", "gaussian")):
            if cfg[group].name != default:
                raise ConfigError(
                    f"{group}={cfg[group].name} does not apply to {vq}: its prior is the autoregressive code "
                    f"prior of its second stage (model.prior_*) and its posterior the nearest code: drop "
                    f"{group}={cfg[group].name}"
                )
        if cfg.model.get("conditional", False):
            raise ConfigError(
                f"model.conditional=true builds a conditional VAE, and {vq} has no conditional form: drop "
                f"model.conditional"
            )
        if cfg.latent_dim is not None:
            raise ConfigError(
                f"latent_dim={cfg.latent_dim} does not apply to {vq}: its code is a grid of "
                f"model.code_dim-dimensional codebook vectors: set model.code_dim (and model.codebook_size)"
            )
        tc = cfg.train
        for name, value, neutral in (
            ("beta", cfg.beta, 1.0),
            ("train.free_bits", tc.free_bits, 0.0),
            ("train.kl_warmup_epochs", tc.kl_warmup_epochs, 0.0),
        ):
            if value != neutral:
                raise ConfigError(
                    f"{name}={value} weighs a KL, and {vq}'s is constant in training (log K per code, the "
                    f"uniform prior of stage one): leave {name}={neutral:g}"
                )
        if tc.ema > 0:
            raise ConfigError(
                f"train.ema={tc.ema} averages the weights, and {vq}'s codebook is a moving average already "
                f"(model.ema_decay): leave train.ema=0"
            )
        if tc.background:
            raise ConfigError(
                f"train.background=true trains a second model for score=likelihood_ratio, which {vq} does "
                f"not offer (its second stage is the code prior): drop train.background"
            )
        m = cfg.model
        rule = f"must be a multiple of model.prior_heads={m.prior_heads}"
        check(m.prior_width % m.prior_heads == 0, "model.prior_width", m.prior_width, rule)
