"""A Gaussian mixture fitted to the training split's posterior means (the aggregate posterior), which
the prior N(0, I) only approximates.

- `fit_code_mixture(codes, components, seed)`: scikit-learn's GaussianMixture on codes, in memory
  (`vae score score=latent` scores codes by its density).
- `run_code_mixture(trained, components, data_dir)`: the mixture of a trained model, as plain tensors
  (`CodeMixture`), fitted once and kept with the run as `<run>/code_mixture-<components>.pt` (written
  atomically, read with torch.load(weights_only=True)); a file fitted for another checkpoint (another
  file, or the run trained further) is refitted and replaced. `vae sample sampler=gmm` draws from it
  (pythae's GaussianMixtureSampler): codes where the training codes are, not in the holes between the
  aggregate posterior and the prior.
- `diagonal=True`: one Gaussian with a diagonal covariance, the per-dimension mean and variance of the
  training codes, kept as `<run>/code_gaussian.pt`: `vae sample sampler=gaussian`'s, and the sampler of a
  plain autoencoder (objective=ae), which has no prior to draw from (the "ex-post density estimation"
  of Ghosh et al. 2020).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vae_cli.errors import CheckpointError, ConfigError, DataError
from vae_cli.io import write_atomically

log = logging.getLogger("vae")

#: score=latent and sampler=gmm fit their mixture to at most this many training codes (a seeded random
#: subset beyond it): EM on 100,000 16-dimensional codes takes seconds, and more codes do not change the fit
CODES_FITTED_MAX = 100_000
#: the seed of a kept mixture's fit (k-means initialisation, subset, binarisation draw): the mixture is
#: the checkpoint's, whatever seed a command samples with
FIT_SEED = 0
#: the file's format, bumped when its contents change (an older file is refitted)
FORMAT = 1


#: the variance floor of the diagonal Gaussian's dimensions, as GaussianMixture's reg_covar
VARIANCE_FLOOR = 1e-5


def fit_code_mixture(codes: torch.Tensor, components: int, seed: int, what: str = "score=latent") -> Any:
    """A Gaussian mixture with full covariances fitted by EM (scikit-learn's GaussianMixture, k-means
    initialisation) to codes (N, d), or a ConfigError when there are fewer codes than components."""
    from sklearn.mixture import GaussianMixture

    if len(codes) < max(2, components):
        raise ConfigError(
            f"{what} fits {components} Gaussians to the training codes and the training split has "
            f"{len(codes)} examples: set components= below {max(2, len(codes))}"
        )
    if len(codes) > CODES_FITTED_MAX:
        generator = torch.Generator().manual_seed(seed)
        codes = codes[torch.randperm(len(codes), generator=generator)[:CODES_FITTED_MAX]]
    mixture = GaussianMixture(components, covariance_type="full", reg_covar=1e-5, random_state=seed)
    return mixture.fit(codes.double().numpy())


@dataclass
class CodeMixture:
    """A Gaussian mixture over codes as plain tensors (float64 on the CPU), and what it was fitted on."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, d)
    covariances: torch.Tensor  # (K, d, d)
    components: int
    seed: int
    checkpoint: str  # the checkpoint file's name (best.ckpt, last.ckpt, ...)
    step: int  # its optimisation steps
    codes: int  # the training codes it was fitted to

    @classmethod
    def diagonal_gaussian(cls, codes: torch.Tensor, checkpoint: str, step: int) -> CodeMixture:
        """One Gaussian N(mean, diag(var)) fitted to codes (N, d) by maximum likelihood: each dimension's
        mean and (biased) variance, floored at VARIANCE_FLOOR."""
        codes = codes.double()
        variances = codes.var(0, correction=0).clamp(min=VARIANCE_FLOOR)
        return cls(
            torch.ones(1, dtype=torch.float64),
            codes.mean(0)[None],
            torch.diag_embed(variances)[None],
            1,
            FIT_SEED,
            checkpoint,
            step,
            len(codes),
        )

    @classmethod
    def from_sklearn(cls, mixture: Any, seed: int, checkpoint: str, step: int, codes: int) -> CodeMixture:
        return cls(
            torch.from_numpy(mixture.weights_).double(),
            torch.from_numpy(mixture.means_).double(),
            torch.from_numpy(mixture.covariances_).double(),
            int(mixture.n_components),
            seed,
            checkpoint,
            step,
            codes,
        )

    def payload(self) -> dict[str, Any]:
        return {"format": FORMAT, **{name: getattr(self, name) for name in self.__dataclass_fields__}}

    @classmethod
    def from_payload(cls, payload: Any) -> CodeMixture:
        """The mixture a file holds, or ValueError when it is not one."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError("not a code mixture of this format")
        mixture = cls(**{name: payload[name] for name in cls.__dataclass_fields__})
        k, d = mixture.means.shape
        if mixture.weights.shape != (k,) or mixture.covariances.shape != (k, d, d):
            raise ValueError("its tensors' shapes do not agree")
        return mixture

    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n codes (n, d) float32 on the generator's device: a component k ~ Categorical(weights) (by
        torch.multinomial with `generator`), then z = means_k + temperature * L_k eps, eps ~ N(0, I)
        from `generator`, L_k the Cholesky factor of covariances_k: reproducible from the seed."""
        device = generator.device
        weights = self.weights.to(device, torch.float32)
        means = self.means.to(device, torch.float32)
        chol = torch.linalg.cholesky(self.covariances).to(device, torch.float32)
        k = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn((n, means.shape[-1]), generator=generator, device=device)
        return means[k] + temperature * (chol[k] @ eps[:, :, None])[:, :, 0]


def mixture_file(run_dir: Path, components: int, diagonal: bool = False) -> Path:
    """Where a run keeps its mixture of `components` Gaussians (or its diagonal Gaussian)."""
    return run_dir / ("code_gaussian.pt" if diagonal else f"code_mixture-{components}.pt")


def sampler_name(diagonal: bool) -> str:
    return "sampler=gaussian" if diagonal else "sampler=gmm"


def fit_run_mixture(
    trained: Any, components: int, data_dir: str | None, batch_size: int = 256, diagonal: bool = False
) -> CodeMixture:
    """Fit the mixture (or the diagonal Gaussian) to the posterior means of the model's training split
    (seed FIT_SEED), or one line saying the training data is needed."""
    from vae_cli.commands.common import load_data
    from vae_cli.estimators import encode_split

    try:
        data = load_data(trained, data_dir)
    except (DataError, CheckpointError, OSError) as e:
        raise DataError(
            f"{sampler_name(diagonal)} needs the training data, to fit its "
            f"{'Gaussian' if diagonal else 'mixture'} to the training codes (point data_dir= at it): {e}"
        ) from None
    codes = encode_split(trained.model, data.train, data.binarize, FIT_SEED, batch_size)
    if diagonal:
        if len(codes) < 2:
            raise ConfigError(
                f"sampler=gaussian fits a Gaussian to the training codes and the training split has "
                f"{len(codes)} example(s): it needs at least 2"
            )
        return CodeMixture.diagonal_gaussian(codes, trained.path.name, trained.step)
    mixture = fit_code_mixture(codes, components, FIT_SEED, what="sampler=gmm")
    return CodeMixture.from_sklearn(mixture, FIT_SEED, trained.path.name, trained.step, len(codes))


def _stale(kept: CodeMixture, trained: Any, components: int) -> str | None:
    """Why a kept mixture is not this checkpoint's, or None."""
    if kept.checkpoint != trained.path.name:
        return f"it was fitted for {kept.checkpoint}, not {trained.path.name}"
    if kept.step != trained.step:
        return f"it was fitted at step {kept.step} and the checkpoint is at step {trained.step}"
    if kept.components != components or kept.seed != FIT_SEED:
        return "it was fitted with other settings"
    return None


def run_code_mixture(
    trained: Any, components: int, data_dir: str | None, batch_size: int = 256, diagonal: bool = False
) -> tuple[CodeMixture, Path | None]:
    """The checkpoint's mixture of `components` Gaussians (with `diagonal`, its one diagonal Gaussian:
    components is 1) and the file that keeps it (None: in memory).

    Read from <run>/code_mixture-<components>.pt when that was fitted for this checkpoint file at this
    step; else fitted and written there atomically (replacing a stale one, with a log line saying why).
    A lone .ckpt outside a run folder, or a run folder that cannot be written, gets a mixture in memory."""
    run_dir, sampler = trained.run_dir, sampler_name(diagonal)
    fit = "the Gaussian" if diagonal else "the mixture"
    components = 1 if diagonal else components
    path = mixture_file(run_dir, components, diagonal) if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            kept = CodeMixture.from_payload(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # noqa: BLE001  an unreadable file is refitted, never trusted
            why = f"it cannot be read ({' '.join(str(e).split())[:200]})"
        else:
            why = _stale(kept, trained, components)
            if why is None:
                log.info("%s: %s kept in %s (fitted to %d training codes)", sampler, fit, path, kept.codes)
                return kept, path
        log.info("%s: refitting %s: %s", sampler, path, why)
    mixture = fit_run_mixture(trained, components, data_dir, batch_size, diagonal)
    if path is None:
        log.info(
            "%s: %s is not in a run folder: %s is fitted in memory, not kept", sampler, trained.path, fit
        )
        return mixture, None
    try:
        write_atomically(path, lambda f: torch.save(mixture.payload(), f))
    except OSError as e:
        log.info(
            "%s: cannot write %s (%s): %s is fitted in memory, not kept", sampler, path, e.strerror or e, fit
        )
        return mixture, None
    fitted = "a diagonal Gaussian" if diagonal else f"{components} Gaussians"
    log.info("%s: fitted %s to %d training codes, kept in %s", sampler, fitted, mixture.codes, path)
    return mixture, path
