"""The conditional VAE (Sohn et al. 2015, "Learning structured output representation using deep conditional
generative models"), `model.conditional=true`: the label y, one-hot over K classes, joins the encoder's
input and the decoder's code,

    q(z | x, y)   the encoder on [x, onehot(y)]: K more channels (constant maps) for images, K more
                  features for a dense encoder (model=mlp, a ladder of form=mlp) and for vectors
    p(x | z, y)   the decoder on [z, onehot(y)]
    p(z)          the registered prior, independent of y: Sohn et al.'s CVAE with a label-free prior, whose
                  ELBO  E_q[log p(x|z,y)] - KL(q(z|x,y) || p(z))  bounds log p(x|y), the likelihood of x
                  given its label (every number of `vae evaluate` and `vae score` is one given the label)

Every architecture is built by its own builder, unchanged, for the wider inputs: the encoder for C + K
channels (or D + K features), the decoder for a code of latent_dim + K. A hierarchy (model=ladder, a decoder
that `join`s the prior and the posterior) decodes x from its bottom layer alone, through `decoder.net`: the
label joins that layer's code there, so the top-down networks, and with them the prior, stay label-free.

The label reaches the networks through the `Condition` that the model and its wrapped networks share:
`conditioned(model, labels)` sets it around one batch's calls, so the calls themselves (the objectives,
DistributedDataParallel, torch.compile, the estimators) are the unconditional ones; an unconditional model
never meets any of it. A conditional model's own methods also take `labels=` (the Python API).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from vae_cli.config.train import validate_conditional
from vae_cli.errors import ConfigError, DataError
from vae_cli.likelihoods import Likelihood
from vae_cli.models.posteriors import Posterior
from vae_cli.models.priors import Prior
from vae_cli.models.vae import VAE, VAEOutput

#: one-hot entries at most: each is a channel of every encoder input (a label column of real numbers,
#: mistaken for classes, would otherwise build a model thousands of channels wide)
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Classes:
    """The labels a conditional model knows: `count` one-hot entries (label k is entry k), the labels its
    training split holds (`trained`: those it can generate), and their names (empty: the numbers)."""

    count: int
    trained: tuple[int, ...]
    names: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        """What a checkpoint keeps (`classes`), from which `load_model` rebuilds the model."""
        return {"count": self.count, "trained": list(self.trained), "names": list(self.names)}

    @classmethod
    def from_payload(cls, saved: Any) -> Classes | None:
        """The classes a checkpoint kept; None when it kept none (or something else)."""
        if not isinstance(saved, dict):
            return None
        count, trained, names = saved.get("count"), saved.get("trained"), saved.get("names", [])
        if not (isinstance(count, int) and 0 < count <= MAX_CLASSES and isinstance(trained, list)):
            return None
        if not all(isinstance(k, int) and 0 <= k < count for k in trained) or not trained:
            return None
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return None
        return cls(count, tuple(trained), tuple(names))

    def name(self, label: int) -> str:
        return self.names[label] if 0 <= label < len(self.names) else str(label)

    def describe(self) -> str:
        """'the trained classes are ...', for messages."""
        shown = [f"{self.name(k)}" if not self.names else f"{self.name(k)} ({k})" for k in self.trained]
        listing = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
        return f"the trained classes are {listing}"

    def index(self, value: Any, what: str) -> int:
        """One label from the command line (its number or its name, as `anomaly_class=` takes them) -> its
        number, one the model was trained on. Raises ConfigError, one line."""
        from vae_cli.data.base import class_indices

        try:
            (label,) = class_indices([value], list(self.names), what, self.trained)
        except ConfigError:
            label = None
        if label not in self.trained:  # (a name of a class training left out, too)
            raise ConfigError(f"{what}={value} is not a class this model was trained on: {self.describe()}")
        return label

    def in_turn(self, n: int) -> torch.Tensor:
        """n labels taking the trained classes in turn: (n,) int64."""
        trained = torch.tensor(self.trained, dtype=torch.long)
        return trained[torch.arange(n) % len(trained)]


def data_classes(data: Any) -> Classes:
    """The classes of a DataBundle's labels, for a conditional model; one line when it has none."""
    labels = data.train.labels
    if labels is None:
        raise DataError(
            f"model.conditional=true needs labelled data, and {data.name} has no labels: use mnist, "
            f"fashion_mnist, synthetic (its shapes), an image folder with one sub-folder per class, or a "
            f"tensor file with dataset.label_column"
        )
    present = [s.labels for s in (data.train, data.val, data.test) if s.labels is not None and len(s.labels)]
    low = min(int(t.min()) for t in present)
    if low < 0:
        raise DataError(
            f"model.conditional=true: the labels must be class numbers 0, 1, ...; {data.name} has {low}"
        )
    count = len(data.label_names) or max(int(t.max()) for t in present) + 1
    if count > MAX_CLASSES:
        raise DataError(
            f"model.conditional=true: {data.name}'s labels go up to {count - 1}, more than {MAX_CLASSES} "
            f"classes: is the label column a class (dataset.label_column)?"
        )
    trained = tuple(sorted(labels.unique().tolist()))
    return Classes(count, trained, tuple(data.label_names))


def check_conditional(cfg: Any, prior_name: str, classes: Classes | None) -> None:
    """What a conditional model cannot be built without, or with. Raises ConfigError, one line."""
    validate_conditional(cfg.name, prior_name)
    if classes is None:
        raise ConfigError(
            "model.conditional=true needs the classes of the data's labels (create_model(classes=...))"
        )


class Condition:
    """The one-hot labels (rows, K) of the batch being processed, shared by a conditional model and its
    wrapped networks; None outside `conditioned`. `dense`: the encoder is dense (its input is flattened)."""

    def __init__(self, classes: Classes, dense: bool) -> None:
        self.classes, self.dense = classes, dense
        self.onehot: torch.Tensor | None = None

    def rows(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """The one-hot labels of n rows (n, K) in `like`'s dtype: the batch's own; repeated when k draws
        per example are decoded as one (k * N)-row batch, draw-major, as VAE.forward and the estimators
        decode them; one label for every row."""
        onehot = self.onehot
        if onehot is None:
            raise RuntimeError(
                "a conditional model needs the labels: call it inside conditioned(model, labels)"
            )
        if len(onehot) != n:
            if n % len(onehot):
                raise RuntimeError(f"{n} rows for {len(onehot)} labels: set one label per row")
            onehot = onehot.repeat(n // len(onehot), 1)
        return onehot.to(like.dtype)

    def join_input(self, x: torch.Tensor) -> torch.Tensor:
        """[x, onehot(y)]: (N, C + K, H, W), K constant maps, for an encoder of images; (N, 1, 1, D + K),
        the flattened input and K features, for a dense one."""
        y = self.rows(len(x), x)
        if self.dense:
            return torch.cat([x.flatten(1), y], 1)[:, None, None, :]
        return torch.cat([x, y[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)


class LabelledInput(nn.Module):
    """An encoder of [x, onehot(y)] (the label from the shared Condition)."""

    def __init__(self, net: nn.Module, condition: Condition) -> None:
        super().__init__()
        self.net = net
        self.condition = condition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.condition.join_input(x))


class LabelledCode(nn.Module):
    """A decoder network of [z, onehot(y)] (the label from the shared Condition)."""

    def __init__(self, net: nn.Module, condition: Condition) -> None:
        super().__init__()
        self.net = net
        self.condition = condition

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.condition.rows(len(z), z)], -1))


Builder = Callable[..., tuple[nn.Module, nn.Module]]


def conditional_parts(
    build: Builder,
    cfg: Any,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    out_channels: int,
    classes: Classes,
    dense: bool,
) -> tuple[nn.Module, nn.Module, Condition]:
    """The encoder (of [x, y]: not yet wrapped, so that a hierarchy's prior still gets its own encoder),
    the decoder (its code network wrapped to read [z, y]) and their Condition, from the architecture's own
    `build(cfg, image_shape, latent_dim, out_channels)`, called for the wider inputs."""
    k = classes.count
    c, h, w = image_shape
    if cfg.name == "mlp" and getattr(cfg, "hidden_dims", 0) is None:  # automatic widths: the real data's
        from vae_cli.config.auto import hidden_dims_default

        cfg = OmegaConf.merge(cfg, {"hidden_dims": hidden_dims_default(image_shape)})
    wide_input = (1, 1, math.prod(image_shape) + k) if dense else (c + k, h, w)
    encoder, unused = build(cfg, wide_input, latent_dim, out_channels)
    condition = Condition(classes, dense)
    if getattr(unused, "join", None) is None:
        _, decoder = build(cfg, image_shape, latent_dim + k, out_channels)
        return encoder, LabelledCode(decoder, condition), condition
    # a hierarchy decodes x from its bottom layer (model.layers[0] values) through decoder.net: that net
    # comes from a ladder whose bottom layer is K wider, the rest from the ladder as configured
    _, decoder = build(cfg, image_shape, latent_dim, out_channels)
    layers = list(cfg.layers)
    wider = OmegaConf.merge(cfg, {"layers": [layers[0] + k, *layers[1:]]})
    decoder.net = LabelledCode(build(wider, image_shape, latent_dim, out_channels)[1].net, condition)
    return encoder, decoder, condition


Labels = torch.Tensor | int | Sequence[int]


class ConditionalVAE(VAE):
    """A VAE whose encoder and decoder also see the label (see the module's docstring). Its methods take
    `labels=` ((N,) class numbers, one per example, or one number for all); without it, those that
    `conditioned(model, labels)` set; `sample` without labels takes the trained classes in turn."""

    def __init__(
        self,
        condition: Condition,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        prior: Prior | None = None,
        posterior: Posterior | None = None,
    ) -> None:
        super().__init__(
            LabelledInput(encoder, condition), decoder, likelihood, latent_dim, image_shape, prior, posterior
        )
        self.condition = condition

    @property
    def classes(self) -> Classes:
        return self.condition.classes

    def one_hot(self, labels: Labels) -> torch.Tensor:
        """Class numbers -> one-hot rows (N, K) float32 on the model's device (one number: one row)."""
        device = next(self.parameters()).device
        labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
        return F.one_hot(labels, self.classes.count).float()

    @contextlib.contextmanager
    def given(self, labels: Labels) -> Iterator[ConditionalVAE]:
        """Inside, every call sees these labels (the labels set before are back afterwards)."""
        previous = self.condition.onehot
        self.condition.onehot = self.one_hot(labels)
        try:
            yield self
        finally:
            self.condition.onehot = previous

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        samples: int = 1,
        densities: bool = False,
        labels: Labels | None = None,
    ) -> VAEOutput:
        if labels is None:  # (training: the loop set them; nothing here for torch.compile to trace)
            return super().forward(x, generator, samples, densities)
        with self.given(labels):
            return super().forward(x, generator, samples, densities)

    def encode(self, x: torch.Tensor, labels: Labels | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x, y)'s parameters (mu, logvar), each (N, d)."""
        if labels is None:
            return super().encode(x)
        with self.given(labels):
            return super().encode(x)

    def code(self, x: torch.Tensor, labels: Labels | None = None) -> torch.Tensor:
        with contextlib.nullcontext() if labels is None else self.given(labels):
            return super().code(x)

    def decode(self, z: torch.Tensor, labels: Labels | None = None) -> torch.Tensor:
        """p(x|z, y)'s parameters."""
        if labels is None:
            return super().decode(z)
        with self.given(labels):
            return super().decode(z)

    def reconstruct(self, x: torch.Tensor, labels: Labels | None = None) -> torch.Tensor:
        with contextlib.nullcontext() if labels is None else self.given(labels):
            return super().reconstruct(x)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        labels: Labels | None = None,
    ) -> torch.Tensor:
        """n images decoded from z ~ p(z) with the labels given (one for all, or n), else those set, else
        the trained classes in turn."""
        if labels is None and self.condition.onehot is None:
            labels = self.classes.in_turn(n)
        with contextlib.nullcontext() if labels is None else self.given(labels):
            return super().sample(n, temperature, generator)


def conditioned(model: Any, labels: Labels | None) -> contextlib.AbstractContextManager:
    """`model.given(labels)` for a conditional model; nothing at all for another one, or without labels."""
    if labels is None or not isinstance(model, ConditionalVAE):
        return contextlib.nullcontext()
    return model.given(labels)


def each_conditioned(model: Any, batches: Any) -> Iterator[torch.Tensor]:
    """The images of each batch; a conditional model's batches carry labels (`with_labels`), which stay set
    on the model while the loop's body processes that batch. Other batches pass through as they are."""
    from vae_cli.data.loaders import split_batch

    for batch in batches:
        images, labels = split_batch(batch)
        with conditioned(model, labels):
            yield images


def classes_of(model: Any) -> Classes | None:
    """A conditional model's classes; None for another one."""
    return model.classes if isinstance(model, ConditionalVAE) else None


def with_labels(batches: Any, split: Any, model: Any) -> Any:
    """The batches with their labels, (images, labels), for a conditional model; the batches themselves
    for another one. A split without labels is one line."""
    if not isinstance(model, ConditionalVAE):
        return batches
    from vae_cli.data.loaders import LabelledBatches

    if split.labels is None:
        raise DataError(
            "the model is conditional (model.conditional=true): it needs each example's label, and these "
            "examples have none"
        )
    return LabelledBatches(batches, split.labels)


def check_split_labels(model: Any, split: Any, source: str) -> None:
    """Before a command's work: a conditional model needs labels on every example of `split`, of classes it
    was trained on. One line otherwise."""
    check_labels(model, split.labels, source)


def check_labels(model: Any, labels: torch.Tensor | None, source: str) -> None:
    """`check_split_labels` of the examples' labels (None: they have none)."""
    classes = classes_of(model)
    if classes is None:
        return
    if labels is None:
        vectors = tuple(model.image_shape[:2]) == (1, 1)
        how = (
            "give the table's label column (label_column=<name>)"
            if vectors
            else f"put the images in one sub-folder per class ({_names_hint(classes)})"
        )
        raise DataError(
            f"the model is conditional (model.conditional=true): it needs each example's class, and "
            f"{source} has none: {how}"
        )
    unknown = sorted(set(labels.unique().tolist()) - set(classes.trained))
    if unknown:
        shown = ", ".join(classes.name(k) if 0 <= k < classes.count else str(k) for k in unknown[:10])
        raise DataError(
            f"the model is conditional and {source} holds label(s) {shown} that it was not trained on "
            f"(dataset.exclude_classes?): {classes.describe()}"
        )


def input_labels(
    labels: torch.Tensor | None, label_names: Sequence[str], classes: Classes | None, source: str
) -> tuple[torch.Tensor | None, list[str]]:
    """The labels of inputs read from files (sub-folders named by class, a label column) in the model's
    numbering, and its label names: by name where the inputs' labels are named, else by number (a class
    it was not trained on is one line; inputs without labels are `check_labels`'). Unchanged for an
    unconditional model."""
    if classes is None or labels is None:
        return labels, list(label_names)
    if not label_names:  # numbers (a label column of integers): the model's numbers
        return labels, list(classes.names)
    mapping = []
    for name in label_names:
        try:
            mapping.append(classes.index(name, "class"))
        except ConfigError:
            raise DataError(
                f"{source}: its class '{name}' is not one the conditional model was trained on: "
                f"{classes.describe()}"
            ) from None
    return torch.tensor(mapping, dtype=torch.long)[labels], list(classes.names)


def _names_hint(classes: Classes) -> str:
    names = [classes.name(k) for k in classes.trained[:4]]
    return "named " + ", ".join(names) + (", ..." if len(classes.trained) > 4 else "")
