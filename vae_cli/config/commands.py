"""The schemas of `vae sample`, `vae reconstruct`, `vae evaluate`, `vae embed` and `vae score`: everything
else (the model, the data, the likelihood) comes from the checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig

from vae_cli.config.data import seed_key
from vae_cli.config.fields import check_node, key
from vae_cli.config.train import device_key, validate_denoise
from vae_cli.errors import ConfigError

SPLITS = ("train", "val", "test")
AUTO_CHUNK = "must be >= 1, or null for automatic"
#: importance samples (or ELBO draws) per example: Burda et al. (2015) report log-likelihoods with
#: k=5000, where the bound has all but stopped tightening; 20 times that is the most that can help, and
#: already means 10^9 decodes for a 10,000-image test split (hours on a CPU)
DRAWS_MAX = 100_000
#: prior samples in one `vae sample`: a million 28x28 images are 3 GiB of float32 (64x64: 16 GiB), the
#: most a workstation holds, and far more than any grid shows
SAMPLES_MAX = 1_000_000


def _is_labels(value: Any) -> bool:
    values = list(value) if isinstance(value, ListConfig | list) else [value]
    return all(isinstance(v, int | str) and not isinstance(v, bool) for v in values)


LABELS = (_is_labels, "must be a label or a list of labels, e.g. 9 or [7,9] or cats")
#: images per side of `vae sample mode=manifold`'s grid: 256^2 = 65,536 decodes, more than a picture shows
MANIFOLD_STEPS_MAX = 256


def _is_dims(value: Any) -> bool:
    """traverse's N >= 0, or manifold's list of dimension indices."""
    values = list(value) if isinstance(value, ListConfig | list) else [value]
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


DIMS = (
    _is_dims,
    "must be a count N >= 0 (mode=traverse) or two latent dimensions [i,j] (mode=manifold), e.g. dims=[0,1]",
)
#: the scores of `vae score score=<name>`, registered in vae_cli/scores.py (a test checks they agree)
SCORE_NAMES = ("neg_elbo", "iwae", "recon_error", "complexity", "likelihood_ratio", "latent")


def draws_key(default: int, help: str, minimum: int, note: str = "") -> int:
    """A number of draws z ~ q(z|x) per example, bounded: each costs a decoder pass over the split."""
    return key(
        default, help, min=minimum, lt=DRAWS_MAX + 1, rule=f"must be in [{minimum}, {DRAWS_MAX}]{note}"
    )


def scale_key(what: str = "the grid's") -> int | None:
    return key(
        None,
        f"{what} cells upscaled by this whole factor (nearest neighbour); null: to at least 64 px, "
        "1: the native size",
        min=1,
        lt=65,
        rule="must be in [1, 64], or null for at least 64 px cells",
    )


@dataclass
class FromCheckpointConfig:
    """Keys shared by the commands that start from a trained model."""

    ckpt: str | None = key(
        None, "required: a .ckpt file, or a training run folder (its checkpoints/best.ckpt, else last.ckpt)"
    )
    out: str | None = key(
        None, "the output folder (outputs, log, .hydra/); null: a fresh folder under outputs/"
    )
    seed: int = seed_key(0, "seeds the draws (and the binarisation draw of binarised data)")
    device: str = device_key()
    log_to_run: bool = key(False, "also log to the training run's TensorBoard (its tensorboard/ folder)")
    data_dir: str | None = key(None, "where the training dataset is; null: the checkpoint's")


@dataclass
class SampleAppConfig(FromCheckpointConfig):
    log_to_run: bool = key(False, "also log the grid to the training run's TensorBoard")
    mode: str = key(
        "mean",
        "mean: prior samples shown as E[x|z] | draw: x ~ p(x|z) | traverse | interpolate | manifold: a 2-D "
        "latent space (or two dims=[i,j]) decoded on a grid over the prior's quantiles | classes (a "
        "conditional model): one row per class, nrow columns, the same codes z down each column",
        choices=("mean", "draw", "traverse", "interpolate", "manifold", "classes"),
    )
    label: Any = key(
        None,
        "a conditional model (model.conditional=true): the class decoded, its number or its name, e.g. "
        "label=3 or label=trouser; null: mean/draw take the classes in turn, traverse/interpolate each "
        "encoded image's own, manifold the first class",
        check=(
            lambda v: v is None or (isinstance(v, int | str) and not isinstance(v, bool)),
            "must be one label, a number or a name, e.g. label=3",
        ),
    )
    sampler: str = key(
        "prior",
        "mean/draw/manifold: where the codes come from: prior (z ~ p(z); for objective=ae, which has none, the "
        "gaussian sampler) | gmm (a Gaussian mixture fitted to the training split's posterior means, kept "
        "in the run folder as code_mixture-<components>.pt) | gaussian (one diagonal Gaussian fitted to "
        "them, kept as code_gaussian.pt)",
        choices=("prior", "gmm", "gaussian"),
    )
    components: int = key(
        10,
        "sampler=gmm: the Gaussians of the mixture (full covariances)",
        min=1,
        lt=1001,
        rule="must be in [1, 1000]",
    )
    n: int = key(
        64,
        "mean/draw: the number of prior samples",
        min=1,
        lt=SAMPLES_MAX + 1,
        rule=f"must be in [1, {SAMPLES_MAX}]",
    )
    nrow: int = key(8, "mean/draw: images per row", min=1)
    temperature: float = key(
        1.0,
        "mean/draw: scales the prior's spread: z ~ N(0, temperature^2 I) for prior=standard, each "
        "component's Gaussian for a mixture (and sampler=gmm's); model=vqvae: divides the code prior's "
        "logits",
        gt=0,
    )
    save_tensor: bool = key(False, "also write the images as a tensor (<name>.pt)")
    scale: int | None = scale_key()
    range: list[float] = key(
        [-3.0, 3.0],
        "traverse: the values each latent dimension sweeps, [low,high]",
        check=(
            lambda r: len(r) == 2 and all(_finite(v) for v in r) and r[0] < r[1],
            "must be two finite numbers [low,high] with low < high, e.g. range=[-3,3]",
        ),
    )
    steps: int = key(
        11,
        "traverse/interpolate: images per row | manifold: images per side (quantiles (k + 1/2) / steps)",
        min=2,
        lt=MANIFOLD_STEPS_MAX + 1,
        rule=f"must be in [2, {MANIFOLD_STEPS_MAX}]",
    )
    base: str = key(
        "zero",
        "traverse: the code the sweep starts from: zero | image (the first `split` image, encoded)",
        choices=("zero", "image"),
    )
    dims: Any = key(
        0,
        "traverse: rows for the N dimensions of highest average KL (0: every one) | manifold: the two "
        "latent dimensions [i,j] to sweep, the others at the prior's mean (0: a 2-D latent space's own)",
        check=DIMS,
    )
    show_inactive: bool = key(
        False,
        "traverse: also show inactive dimensions (Var_x(mu) <= 0.01, as evaluate counts active units), "
        "which change nothing; false hides them and says how many",
    )
    pairs: int = key(8, "interpolate: rows, each between two encoded images", min=1)
    method: str = key(
        "linear", "interpolate: along straight lines, or great circles (slerp)", choices=("linear", "slerp")
    )
    split: str = key("test", "traverse/interpolate: where the encoded images come from", choices=SPLITS)


@dataclass
class ReconstructAppConfig(FromCheckpointConfig):
    log_to_run: bool = key(False, "also log the grid to the training run's TensorBoard")
    split: str = key("test", "the split whose images are reconstructed", choices=SPLITS)
    n: int = key(32, "images from the split", min=1)
    nrow: int = key(8, "images per row", min=1)
    scale: int | None = scale_key()
    input: str | None = key(None, "an image file or a folder of images to reconstruct instead of the split")
    noise_level: float = key(
        0.0, "corrupt the inputs first (0: clean), to see a denoising VAE clean them", min=0
    )
    noise: str | None = key(
        None,
        "the corruption: gaussian | mask; null: the training run's train.denoise, else gaussian",
        choices=("gaussian", "mask"),
    )


@dataclass
class EvaluateAppConfig(FromCheckpointConfig):
    seed: int = seed_key(0, "seeds the importance samples and the binarisation draw")
    log_to_run: bool = key(False, "also log the metrics to the training run's TensorBoard")
    split: str = key("test", "the split evaluated", choices=SPLITS)
    iwae_k: int = draws_key(
        1000,
        "importance samples per example for the bound on log p(x) (Burda et al. 2015)",
        1,
        " (Burda et al. use 5000)",
    )
    batch_size: int = key(256, "images encoded at a time", min=1)
    chunk: int | None = key(
        None,
        "importance samples decoded at a time; null: about 4M decoded values (draws x images x pixels) a pass",
        min=1,
        rule=AUTO_CHUNK,
    )
    max_examples: int = key(
        0,
        "evaluate only the first N examples of the split",
        min=0,
        rule="must be >= 0 (0: the whole split)",
    )
    probe: bool = key(True, "a logistic-regression probe on mu, when the dataset has labels")
    probe_train_size: int = key(20000, "at most this many training examples fit the probe", min=1)
    pca: bool = key(
        True,
        "the PCA baseline: PCA with latent_dim components fitted on the train split, its squared "
        "reconstruction error on this split beside the model's recon_error (skipped when latent_dim exceeds "
        "the data's dimensions or the training examples)",
    )
    pca_train_size: int = key(
        10000, "at most this many training examples fit the PCA (a seeded random subset)", min=1
    )


@dataclass
class EmbedAppConfig(FromCheckpointConfig):
    seed: int = seed_key(0, "seeds the examples picked, the projection (tsne) and the binarisation draw")
    log_to_run: bool = key(False, "also log scatter.png to the training run's TensorBoard")
    split: str = key("test", "the split whose examples are encoded", choices=SPLITS)
    n: int = key(
        5000,
        "at most this many examples, a seeded random subset of the split kept in its order (t-SNE's time "
        "grows with it)",
        min=0,
        rule="must be >= 0 (0: the whole split)",
    )
    method: str = key(
        "pca",
        "the 2-D projection of scatter.png when latent_dim > 2: pca (scikit-learn's PCA of the codes) | "
        "tsne (scikit-learn's t-SNE: slow, about 35 s for 2,000 examples on 2 CPU cores)",
        choices=("pca", "tsne"),
    )
    perplexity: float = key(
        30.0, "tsne: the perplexity, about the neighbours each point keeps (below the examples)", gt=0
    )
    batch_size: int = key(256, "examples encoded at a time", min=1)


@dataclass
class ScoreAppConfig(FromCheckpointConfig):
    seed: int = seed_key(0, "seeds the draws z ~ q(z|x) and the binarisation draw")
    log_to_run: bool = key(
        False, "also log ROC AUC, average precision and the mean score to the training run's TensorBoard"
    )
    data_dir: str | None = key(
        None, "where the training dataset is (for input=train|val|test); null: the checkpoint's"
    )
    input: str = key(
        "test",
        "train | val | test (a split of the training data), or a folder of images, an image or a "
        ".npy/.npz/.pt/.csv file (write ./test for a folder called test)",
        check=(lambda v: bool(str(v).strip()), "pass train|val|test, a folder or a file"),
    )
    score: str | None = key(
        None,
        "the anomaly score: neg_elbo | iwae | recon_error | complexity | likelihood_ratio | latent "
        "(images: latent, complexity or likelihood_ratio); null: neg_elbo, or iwae when iwae_k > 0",
        choices=SCORE_NAMES,
    )
    iwae_k: int = draws_key(
        0,
        "k > 0: -log p(x) is estimated by -IWAE_k (score=iwae, and inside complexity and "
        "likelihood_ratio) | 0: by -ELBO",
        0,
        " (0 estimates by -ELBO; Burda et al. use 5000)",
    )
    elbo_samples: int = draws_key(16, "iwae_k=0: draws z ~ q(z|x) averaged in the reconstruction term", 1)
    components: int = key(
        10,
        "score=latent: the Gaussians of the mixture fitted to the training codes",
        min=1,
        lt=1001,
        rule="must be in [1, 1000]",
    )
    batch_size: int = key(256, "examples encoded at a time", min=1)
    chunk: int | None = key(
        None, "importance samples decoded at a time; null: automatic", min=1, rule=AUTO_CHUNK
    )
    max_examples: int = key(0, "score only the first N examples", min=0, rule="must be >= 0 (0: all)")
    n: int = key(
        8, "extremes.png: the n most anomalous examples above their reconstructions, then the n least", min=1
    )
    scale: int | None = scale_key("extremes.png's")
    normal_class: Any = key(
        None, "a label or a list of labels that are normal: every other label is an anomaly", check=LABELS
    )
    anomaly_class: Any = key(
        None,
        "or: the labels that are anomalies (neither: the classes training left out, else 0/1 labels)",
        check=LABELS,
    )
    label_column: str | None = key(
        None, "tensor files: the labels' column or key; null: the training data's dataset.label_column"
    )


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _validate_from_checkpoint(cfg: DictConfig, command: str, schema: type) -> None:
    if not cfg.ckpt:
        raise ConfigError(
            f"ckpt is required: vae {command} ckpt=outputs/train/<date>/<time> "
            f"(a training run folder or a .ckpt file)"
        )
    check_node(cfg, "", schema)


def validate_sample_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "sample", SampleAppConfig)
    if cfg.mode == "classes" and cfg.label is not None:
        raise ConfigError(
            f"label={cfg.label} picks one class, and mode=classes draws a row of each: drop label, or use "
            f"mode=mean label={cfg.label}"
        )
    dims = cfg.dims
    chosen = list(dims) if isinstance(dims, ListConfig | list) else None
    shown = f"[{','.join(map(str, chosen))}]" if chosen is not None else ""
    if cfg.mode == "manifold" and chosen is None and dims != 0:
        raise ConfigError(
            f"dims={dims}: mode=manifold sweeps two latent dimensions: name them, e.g. dims=[0,1] (or leave "
            f"dims out for a 2-D latent space)"
        )
    if cfg.mode == "manifold" and chosen is not None and (len(chosen) != 2 or chosen[0] == chosen[1]):
        raise ConfigError(
            f"dims={shown}: mode=manifold sweeps two different latent dimensions: pass two, e.g. dims=[0,1]"
        )
    if cfg.mode != "manifold" and chosen is not None:
        raise ConfigError(
            f"dims={shown}: a list of dimensions is for mode=manifold; mode={cfg.mode} takes dims=N "
            f"(mode=traverse: the N dimensions of highest KL; 0: all)"
        )


def validate_reconstruct_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "reconstruct", ReconstructAppConfig)
    if cfg.noise_level != 0:
        validate_denoise(cfg.noise or "gaussian", cfg.noise_level)


def validate_evaluate_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "evaluate", EvaluateAppConfig)


def validate_embed_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "embed", EmbedAppConfig)


def validate_score_config(cfg: DictConfig) -> None:
    _validate_from_checkpoint(cfg, "score", ScoreAppConfig)
    if cfg.normal_class is not None and cfg.anomaly_class is not None:
        raise ConfigError("give normal_class or anomaly_class, not both: the other is every remaining label")
    if cfg.score == "iwae" and not cfg.iwae_k:
        raise ConfigError("score=iwae needs importance samples: set iwae_k, e.g. iwae_k=64")


#: command -> (its schema, the name it is stored under in the ConfigStore)
COMMAND_SCHEMAS: dict[str, tuple[type, str]] = {
    "sample": (SampleAppConfig, "sample_schema"),
    "reconstruct": (ReconstructAppConfig, "reconstruct_schema"),
    "evaluate": (EvaluateAppConfig, "evaluate_schema"),
    "embed": (EmbedAppConfig, "embed_schema"),
    "score": (ScoreAppConfig, "score_schema"),
}
