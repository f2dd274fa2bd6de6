"""The anomaly scores of `vae score` (`score=<name>`), registered by name: one function per score.

Every score is high for inputs the model finds anomalous (scores.csv lists them most anomalous first):

    neg_elbo          -ELBO(x), nats: an upper bound on -log p(x) (the default)
    iwae              -IWAE_k(x), nats (k = iwae_k): a tighter estimate of -log p(x)
    recon_error       sum over dimensions of (x - E[x|z = mu(x)])^2, in the input's units squared
    complexity        -log2 p(x) - L(x), bits: the likelihood corrected by the input's complexity L(x), the
                      bits PNG needs for the 8-bit image (Serra et al. 2020)
    likelihood_ratio  -(log p(x) - log p_background(x)), nats: minus the likelihood ratio against a
                      background model trained on inputs with random pixels (Ren et al. 2019)
    latent            -log g(mu(x)), nats of the code: minus the log density of the input's posterior mean
                      under a Gaussian mixture g fitted to the training split's posterior means; not a
                      likelihood of x

-log p(x) is estimated by -ELBO, or by -IWAE_k with iwae_k=k (vae_cli/estimators.py). Likelihoods of
simple images are high under any pixel model, novel or not (Nalisnick et al. 2019, "Do deep generative
models know what they don't know?"): on images, `complexity` and `likelihood_ratio` correct for that, and `latent` asks
instead whether the code lies where the training codes do; on tables, `neg_elbo` (or `recon_error`) is
the score.

A score is a function of a `ScoreContext`, which computes what it asks for once (the model's bounds, the
background model's, the 8-bit inputs). It returns its columns for scores.csv, the score first; `check`,
when a score has one, runs before the long pass and stops with one line when the score cannot apply.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vae_cli.code_mixture import fit_code_mixture
from vae_cli.errors import ConfigError
from vae_cli.estimators import encode_split, estimate_split
from vae_cli.paths import background_dir, find_checkpoint
from vae_cli.registry import Registry

Columns = dict[str, torch.Tensor]


@dataclass
class ScoreContext:
    """What the scores read, each computed on first use and kept: the inputs (a split), how they are
    binarised, and the settings of the pass (iwae_k, elbo_samples, seed, batch_size, chunk)."""

    trained: Any  # vae_cli.api.Trained
    split: Any  # vae_cli.data.base.Split
    binarize: str
    iwae_k: int = 0
    elbo_samples: int = 16
    seed: int = 0
    batch_size: int = 256
    chunk: int | None = None
    #: score=latent: the training split and how it is binarised, read on first use (None: not available)
    training: Callable[[], tuple[Any, str]] | None = None
    components: int = 10
    _cache: dict[str, Any] = field(default_factory=dict)

    def _estimates(self, model: Any, label: str) -> Columns:
        # The same seed means the same binarisation draw for both models: they score the same inputs.
        result = estimate_split(
            model,
            self.split,
            binarize=self.binarize,
            k=self.iwae_k or self.elbo_samples,
            seed=self.seed,
            batch_size=self.batch_size,
            chunk=self.chunk,
            in_memory=self.trained.dataset.in_memory,
            recon_error=True,
            label=label,
        )
        del result["mu"], result["kl_per_dim"]
        result.pop("indices", None)  # model=vqvae's code grids
        if not self.iwae_k:
            del result["iwae_nll"]
        return result

    def estimates(self) -> Columns:
        """The model's per-example neg_elbo, recon, kl, recon_error (and iwae_nll with iwae_k), nats."""
        if "model" not in self._cache:
            self._cache["model"] = self._estimates(self.trained.model, "score")
        return self._cache["model"]

    def nll(self) -> torch.Tensor:
        """The model's estimate of -log p(x), nats: -IWAE_k with iwae_k, else -ELBO."""
        columns = self.estimates()
        return columns["iwae_nll"] if self.iwae_k else columns["neg_elbo"]

    def background_nll(self) -> torch.Tensor:
        """The background model's estimate of -log p_background(x), nats, from the same draws of x."""
        if "background" not in self._cache:
            from vae_cli.api import read_checkpoint

            model = read_checkpoint(background_checkpoint(self.trained), self.trained.device).model
            columns = self._estimates(model, "background")
            self._cache["background"] = columns["iwae_nll"] if self.iwae_k else columns["neg_elbo"]
        return self._cache["background"]

    def codes(self) -> torch.Tensor:
        """The inputs' posterior means mu(x), (N, latent_dim) float32 on the CPU."""
        if "codes" not in self._cache:
            self._cache["codes"] = encode_split(
                self.trained.model, self.split, self.binarize, self.seed, self.batch_size
            )
        return self._cache["codes"]

    def code_mixture(self) -> Any:
        """The Gaussian mixture (scikit-learn's GaussianMixture) fitted to the training split's posterior
        means: `components` Gaussians with full covariances, seeded with `seed`."""
        if "mixture" not in self._cache:
            if self.training is None:
                raise ConfigError("score=latent needs the training data, to fit the codes' mixture")
            split, binarize = self.training()
            codes = encode_split(self.trained.model, split, binarize, self.seed, self.batch_size)
            self._cache["mixture"] = fit_code_mixture(codes, self.components, self.seed)
        return self._cache["mixture"]

    def images(self) -> torch.Tensor:
        """The inputs as 8-bit images, (N, C, H, W) uint8 on the CPU."""
        if "images" not in self._cache:
            self._cache["images"] = torch.cat(
                [
                    self.split.take(range(i, min(i + 4096, len(self.split))))
                    for i in range(0, len(self.split), 4096)
                ]
            ).cpu()
        return self._cache["images"]


@dataclass(frozen=True)
class Score:
    """A registered score: its function, its units and the text of `vae score` (the docstring)."""

    name: str
    units: str
    compute: Callable[[ScoreContext], Columns]
    check: Callable[[Any, Any], None] | None = None  # (trained, score config) -> None, or ConfigError

    def __call__(self, context: ScoreContext) -> Columns:
        return self.compute(context)

    @property
    def doc(self) -> str:
        return " ".join((self.compute.__doc__ or "").split())


SCORES: Registry[Score] = Registry("score")


def register(
    name: str, units: str, check: Callable[[Any, Any], None] | None = None
) -> Callable[[Callable[[ScoreContext], Columns]], Callable[[ScoreContext], Columns]]:
    def add(compute: Callable[[ScoreContext], Columns]) -> Callable[[ScoreContext], Columns]:
        SCORES.register(name)(Score(name, units, compute, check))
        return compute

    return add


# --- the scores ------------------------------------------------------------------------------------------


@register("neg_elbo", "nats")
def neg_elbo(context: ScoreContext) -> Columns:
    """-ELBO(x) = recon + kl, in nats per example: an upper bound on -log p(x), with the reconstruction
    term averaged over elbo_samples draws z ~ q(z|x). The default; the score for tables and other data
    whose likelihood is not dominated by how simple an input is."""
    return {"neg_elbo": context.estimates()["neg_elbo"]}


@register("iwae", "nats")  # iwae_k > 0 is checked with the command line (vae_cli/config/commands.py)
def iwae(context: ScoreContext) -> Columns:
    """-IWAE_k(x), in nats per example (k = iwae_k importance samples, Burda et al. 2015): a tighter
    estimate of -log p(x) than -ELBO, at k decoder passes per input. Use it where neg_elbo would do, when
    the bound's gap matters."""
    return {"iwae_nll": context.estimates()["iwae_nll"]}


@register("recon_error", "squared input units")
def recon_error(context: ScoreContext) -> Columns:
    """The squared error of the mean reconstruction, sum over dimensions of (x - E[x|z = mu(x)])^2, in
    the input's units squared (standard deviations with dataset.standardize): not a likelihood, and
    blind to the noise level the model learned. The classic autoencoder score, for tables."""
    return {"recon_error": context.estimates()["recon_error"]}


def _needs_images(trained: Any, cfg: Any) -> None:
    c, h, _ = trained.model.image_shape
    if h == 1 or c not in (1, 3):
        raise ConfigError(
            "score=complexity compresses images (grey or RGB), and the model's inputs are "
            f"{'vectors' if h == 1 else f'{c}-channel arrays'}: use score=neg_elbo"
        )


@register("complexity", "bits", _needs_images)
def complexity(context: ScoreContext) -> Columns:
    """The input-complexity score of Serra et al. (2020), S(x) = -log2 p(x) - L(x), in bits per example:
    -log p(x) (neg_elbo, or -IWAE_k with iwae_k) in bits, minus L(x), the bits a lossless compressor
    (PNG at maximum compression) needs for the 8-bit input image. A likelihood model finds simple images
    probable whatever they show; subtracting what a generic compressor already finds probable leaves
    what the model's training taught it. For images with a Gaussian likelihood, whose -log p(x) is a
    density, the 8-bit image's bits add C*H*W*log2(255) (the width of one level), the same for every
    input. For images, where likelihoods fail on simple inputs (Nalisnick et al. 2019). Also writes
    png_bits, L(x)."""
    nll_bits = context.nll() / math.log(2)
    if context.trained.config.get("loss", {}).get("name") == "gaussian":
        nll_bits = nll_bits + math.prod(context.trained.model.image_shape) * math.log2(255)
    bits = png_bits(context.images())
    return {"complexity": nll_bits - bits, "png_bits": bits}


def _needs_background(trained: Any, cfg: Any) -> None:
    background_checkpoint(trained)


@register("likelihood_ratio", "nats", _needs_background)
def likelihood_ratio(context: ScoreContext) -> Columns:
    """Minus the likelihood ratio of Ren et al. (2019), in nats per example: score = -LLR(x) with
    LLR(x) = log p(x) - log p_background(x), where the background model is the same model trained on
    inputs whose pixels are each replaced by a random value with probability train.background_noise
    (`vae train ... train.background=true`). Pixel statistics shared by every input (a dark background,
    smooth regions) are modelled by both and cancel; what is left is what the clean training data taught
    the model. -log p is estimated by neg_elbo (or -IWAE_k) for both models, on the same draws of x. For
    images, where likelihoods fail on simple inputs. Also writes likelihood_ratio (LLR, high: normal) and
    background_nll."""
    nll, background = context.nll(), context.background_nll()
    ratio = background - nll  # log p(x) - log p_background(x)
    return {"score": -ratio, "likelihood_ratio": ratio, "background_nll": background}


def _needs_continuous_codes(trained: Any, cfg: Any) -> None:
    from vae_cli.models.vqvae import is_vqvae

    if is_vqvae(trained.model):
        raise ConfigError(
            "score=latent fits a Gaussian mixture to continuous codes, and model=vqvae's are grids of "
            "codebook entries (their density is the code prior's, part of score=neg_elbo): use "
            "score=neg_elbo"
        )


@register("latent", "nats of the code", _needs_continuous_codes)
def latent(context: ScoreContext) -> Columns:
    """Minus the log density of the input's code under the training codes' distribution, -log g(mu(x)),
    in nats of the latent_dim-dimensional code: g is a Gaussian mixture (`components` Gaussians, full
    covariances, scikit-learn's GaussianMixture) fitted to the posterior means mu(x) of the training split
    (the aggregate posterior, which the prior N(0, I) only approximates). Not a likelihood of x: it asks
    whether the code lies where the training codes do, and ignores how simple the image is, so it is the
    image score for classes never seen in training (a novel class lands between or beside the clusters of
    the known ones). Needs the training data (data_dir)."""
    density = context.code_mixture().score_samples(context.codes().double().numpy())
    return {"latent": -torch.from_numpy(density)}


# --- what the scores need --------------------------------------------------------------------------------


def png_bits(images: torch.Tensor) -> torch.Tensor:
    """L(x): the size in bits of each 8-bit image (N, C, H, W) uint8 (C = 1 or 3) as a PNG file, written
    by PIL at maximum compression (zlib level 9, with PIL's `optimize`), header and all. PNG is lossless,
    standard, and in PIL (a dependency already); Serra et al. (2020) found PNG, JPEG 2000 and FLIF give
    the same ranking, FLIF slightly better."""
    pixels = images.numpy()
    sizes = []
    for image in pixels:
        array = image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", optimize=True, compress_level=9)
        sizes.append(8 * buffer.getbuffer().nbytes)
    return torch.tensor(sizes, dtype=torch.float64)


def background_checkpoint(trained: Any) -> Path:
    """The background model's checkpoint beside a trained model (its run folder's background/), or a
    ConfigError saying how to train one."""
    run_dir = trained.run_dir
    folder = background_dir(run_dir) if run_dir is not None else None
    if folder is None or not folder.is_dir():
        where = (
            f"{run_dir} has no background model ({folder.name}/)"
            if run_dir
            else f"{trained.path} is not in a run folder"
        )
        raise ConfigError(
            f"score=likelihood_ratio needs a background model and {where}: train the model again with "
            f"train.background=true (e.g. vae train <the same overrides> train.background=true "
            f"train.background_noise=0.2)"
        )
    return find_checkpoint(folder)
