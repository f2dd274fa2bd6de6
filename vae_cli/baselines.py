"""The PCA baseline of `vae evaluate`: PCA with as many components as the model has latent dimensions,
fitted on the training split, and its squared reconstruction error on the evaluated split.

PCA is the optimum of the linear autoencoder: for an encoder z = A (x - m) and a decoder x_hat = m + B z
with k-dimensional z, the training set's total squared error sum_n ||x_n - x_hat_n||^2 is smallest when
m is the mean and B A projects onto the span of the k leading principal directions (the Eckart-Young-
Mirsky theorem on the centred data matrix; Baldi & Hornik 1989: every other critical point of a linear
autoencoder's squared error is a saddle). So a model whose error is not below PCA's at the same k gains
nothing from its nonlinearity.

The error is the one `recon_error` measures for the model (vae_cli/estimators.py): sum over the data's
dimensions of (x - x_hat)^2 per example, in the model's input units (pixels in [0, 1], binarised as the
model sees them; standardised features for a table). PCA's reconstruction is not clamped to [0, 1]: it is
the linear optimum as it stands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from vae_cli.data import prepare_batch
from vae_cli.data.base import Split
from vae_cli.data.loaders import make_batches

log = logging.getLogger("vae")


@dataclass
class PcaBaseline:
    """A fitted PCA: the training mean (D,) and k orthonormal principal directions (k, D), float64."""

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: float  # the fraction of the training variance the k directions keep
    train_examples: int

    @property
    def k(self) -> int:
        return len(self.components)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x_hat = m + W^T W (x - m) for flat x (N, D): the orthogonal projection onto the principal plane."""
        x = x.double()
        return self.mean + (x - self.mean) @ self.components.T @ self.components

    def recon_error(self, x: torch.Tensor) -> torch.Tensor:
        """sum_d (x_d - x_hat_d)^2 per example, (N,) float64, for x (N, ...) of any shape."""
        flat = x.flatten(1).double().cpu()
        return (flat - self.reconstruct(flat)).pow(2).sum(1)


def fit_pca(x: np.ndarray | torch.Tensor, components: int, seed: int = 0) -> PcaBaseline:
    """scikit-learn's PCA of the rows of x (N, D) with `components` directions (its solver picked by size:
    exact for small data, randomized, seeded, for large)."""
    from sklearn.decomposition import PCA

    array = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    pca = PCA(n_components=components, random_state=seed).fit(array.reshape(len(array), -1))
    ratio = float(np.sum(pca.explained_variance_ratio_))
    return PcaBaseline(
        mean=torch.from_numpy(pca.mean_.astype(np.float64)),
        components=torch.from_numpy(pca.components_.astype(np.float64)),
        explained_variance=ratio if np.isfinite(ratio) else float("nan"),
        train_examples=len(array),
    )


def pca_skip_reason(components: int, train_examples: int, num_dims: int) -> str | None:
    """Why PCA at `components` cannot be fitted, or None: it has at most min(N, D) directions."""
    if components > num_dims:
        return f"latent_dim={components} exceeds the data's {num_dims} dimensions"
    if components > train_examples:
        return f"latent_dim={components} exceeds the {train_examples} training examples"
    return None


def training_inputs(train: Split, binarize: str, most: int, seed: int) -> torch.Tensor:
    """At most `most` training examples (a seeded random subset, in order), as the model sees them:
    (N, D) float32 on the CPU, dynamically binarised data drawn once with the seed's generator."""
    if len(train) > most:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:most].sort().values
        images = train.take(pick)
    else:
        images = train.take(range(len(train)))
    return prepare_batch(images, binarize, torch.Generator().manual_seed(seed)).flatten(1)


@torch.inference_mode()
def pca_recon_errors(
    baseline: PcaBaseline,
    split: Split,
    *,
    binarize: str,
    seed: int,
    batch_size: int,
    device: torch.device,
    in_memory: str = "auto",
) -> torch.Tensor:
    """PCA's squared error per example (N,) float64 on the evaluated split, on the very inputs
    `estimate_split(..., seed=seed, batch_size=batch_size)` gives the model: the same batches,
    binarised by a generator seeded alike."""
    data_generator = torch.Generator(device=device).manual_seed(seed)
    errors = [
        baseline.recon_error(prepare_batch(images, binarize, data_generator))
        for images in make_batches(split, batch_size, False, seed, device, in_memory)
    ]
    return torch.cat(errors) if errors else torch.empty(0, dtype=torch.float64)
