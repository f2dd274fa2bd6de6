"""The public Python API: a trained model from its checkpoint alone.

    from vae_cli import load_model

    model = load_model("outputs/train/2024-05-01/12-00-00")   # a run folder or a .ckpt file
    images = model.sample(16)                                 # (16, C, H, W) in [0, 1]
    mu, logvar = model.encode(images)                         # the encoder's Gaussian
    codes = model.code(images)                                # the posterior's mean code
    print(model.config.latent_dim)

The checkpoint holds the training run's resolved config and the image shape, so the model is rebuilt by
the same registries that built it for training; nothing from the file is imported or instantiated by
name beyond the registered model, prior, posterior, likelihood and dataset names, and it is read with
`torch.load(weights_only=True)` (see checkpoint.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_cli.checkpoint import load_checkpoint
from vae_cli.config import DatasetConfig, LossConfig, ModelConfig, PosteriorConfig, PriorConfig
from vae_cli.errors import CheckpointError, ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import VAE, create_model
from vae_cli.models.conditional import Classes
from vae_cli.paths import find_checkpoint
from vae_cli.training.runtime import resolve_device

log = logging.getLogger("vae")


def resolve_checkpoint(path: str | Path) -> Path:
    """A .ckpt file as given; a folder means its checkpoints/best.ckpt, else checkpoints/last.ckpt (a
    checkpoints/ folder itself works too). A path that exists but is the wrong kind (a folder without
    checkpoints, a device such as /dev/zero) says so, not that it does not exist."""
    return find_checkpoint(path)


@dataclass
class Trained:
    """A model rebuilt from a checkpoint, with what it was trained on."""

    model: VAE
    config: DictConfig  # the training run's resolved config, as saved (with the groups added since)
    dataset: DatasetConfig  # typed sections of it
    path: Path  # the checkpoint file
    step: int  # optimisation steps it had taken (the x-axis for TensorBoard)
    #: dataset.standardize statistics ({"mean": [...], "std": [...]} per feature) it was trained with
    data_stats: dict[str, list[float]] | None = None
    #: the feature columns of the CSV table it was trained on, in order (None: other data, or an older
    #: checkpoint)
    feature_names: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generator(self, seed: int) -> torch.Generator:
        """A generator on the model's device: every draw of a command comes from one, seeded."""
        return torch.Generator(device=self.device).manual_seed(seed)

    @property
    def run_dir(self) -> Path | None:
        """The training run folder when the checkpoint sits in its checkpoints/ folder."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else None


def _typed(schema: type, node: Any, what: str, path: Path) -> Any:
    """A checkpoint section merged into the schema of its option (its `name`; `schema` is the group's
    base): types checked, unknown keys refused, keys of the older flat schemas that it lacks dropped."""
    from vae_cli.config.legacy import saved_section

    if not isinstance(node, dict):
        raise CheckpointError(f"{path} is not a usable vae checkpoint: its config has no '{what}' section")
    try:
        return saved_section(schema.group, node)
    except (ConfigError, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: its {what} config does not fit this vae ({first})") from None


def read_checkpoint(path: str | Path, device: str | torch.device = "auto") -> Trained:
    """Load a checkpoint safely and rebuild its model on `device`, in eval mode. Raises CheckpointError."""
    file = resolve_checkpoint(path)
    device = device if isinstance(device, torch.device) else resolve_device(str(device).lower())
    payload = load_checkpoint(file, map_location=device)
    raw, shape = payload.get("config"), payload.get("image_shape")
    if not isinstance(raw, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(
            f"{file} is not a usable vae checkpoint: it lacks the model's config or weights"
        )
    if not (
        isinstance(shape, list | tuple)
        and len(shape) == 3
        and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise CheckpointError(f"{file} is not a usable vae checkpoint: bad image_shape {shape!r}")
    from vae_cli.config.legacy import ADDED_GROUPS

    model_cfg = _typed(ModelConfig, raw.get("model"), "model", file)
    prior_cfg = _typed(PriorConfig, raw.get("prior", ADDED_GROUPS["prior"]), "prior", file)
    posterior_cfg = _typed(
        PosteriorConfig, raw.get("posterior", ADDED_GROUPS["posterior"]), "posterior", file
    )
    loss_cfg = _typed(LossConfig, raw.get("loss"), "loss", file)
    dataset_cfg = _typed(DatasetConfig, raw.get("dataset"), "dataset", file)
    latent_dim = raw.get("latent_dim")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise CheckpointError(f"{file} is not a usable vae checkpoint: bad latent_dim {latent_dim!r}")
    classes = Classes.from_payload(payload.get("classes"))  # model.conditional's labels
    if model_cfg.get("conditional") and classes is None:
        raise CheckpointError(
            f"{file} is not a usable vae checkpoint: its conditional model's classes are missing"
        )
    try:
        likelihood = create_likelihood(loss_cfg)
        model = create_model(
            model_cfg, tuple(shape), latent_dim, likelihood, prior_cfg, posterior_cfg, classes
        )
        model.load_state_dict(payload["model"])
    except (ConfigError, RuntimeError, KeyError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{file}: the weights do not fit the model its config describes ({first})"
        ) from None
    model.to(device).eval()
    try:
        config = OmegaConf.create({**ADDED_GROUPS, **raw})  # an older run's prior and posterior, named
    except OmegaConfBaseException as e:
        raise CheckpointError(
            f"{file}: its config is unreadable ({str(e).strip().splitlines()[0]})"
        ) from None
    step = payload.get("step", 0)
    stats = payload.get("data_stats")
    if not (isinstance(stats, dict) and all(isinstance(stats.get(k), list) for k in ("mean", "std"))):
        stats = None
    names = payload.get("feature_names")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None
    return Trained(model, config, dataset_cfg, file, step if isinstance(step, int) else 0, stats, names)


def load_model(path: str | Path, device: str | torch.device = "auto") -> VAE:
    """The trained VAE in `path` (a .ckpt file or a training run folder) on `device`, in eval mode.

    It has `encode(x) -> (mu, logvar)` (the encoder's Gaussian), `code(x)` (the posterior's mean code),
    `decode(z)` (the likelihood's parameters; `model.likelihood.mean` turns them into images), `sample(n)`
    (decoded draws of its prior, `model.prior`), `reconstruct(x)`, and `model.config`, the training run's
    config.
    Inputs x are float images in [0, 1] of shape (N, *model.image_shape).

    A conditional model (model.conditional=true: a ConditionalVAE, `model.classes` its labels) takes each
    example's class too: `encode(x, labels)`, `code(x, labels)`, `decode(z, labels)`,
    `reconstruct(x, labels)`, `sample(n, labels=3)` (without labels: its classes in turn).

    A model=vqvae checkpoint gives a VQVAE (vae_cli/models/vqvae.py) with the same surface, except that
    `encode(x)` is its grid z_e, `code(x)` the quantised z_q flattened, `indices(x)` the grid's codebook
    entries and `sample(n)` decoded draws of its code prior (`model.code_prior`)."""
    trained = read_checkpoint(path, device)
    trained.model.config = trained.config
    return trained.model
