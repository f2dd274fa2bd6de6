"""The learned manifold of `vae sample mode=manifold` (Kingma & Welling 2014, figure 4): two latent
dimensions swept over a grid of the prior's quantiles, the others held at the prior's mean, each code
decoded.

The grid's probabilities are evenly spaced in (0, 1), the midpoints p_k = (k + 1/2) / steps of `steps`
equal bins, so the grid is symmetric and never reaches the infinite quantiles 0 and 1. Each chosen
dimension takes the values z = F^-1(p_k) of its marginal under the prior:

    prior=standard   z = temperature * Phi^-1(p_k) (Phi: the standard normal CDF), exactly; the others at 0
    prior=uniform    (one-hot codes of posterior=categorical) refused: nothing lies between 0 and 1
    any other prior  (mog, vamp) the empirical quantiles of its marginal, from PRIOR_DRAWS seeded draws
                     z ~ p(z) (spread by `temperature` as `mode=mean` spreads them); the others at the mean
                     of those draws. The grid is the product of two marginal quantiles, so it spans where
                     each dimension's mass lies, not the modes of a mixture jointly

Equal steps in p are equal amounts of prior mass, so the grid spends its cells where codes are likely,
as the paper's figure does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch

from vae_cli.errors import ConfigError

#: prior draws behind a non-standard prior's quantiles: the standard error of an estimated quantile is
#: sqrt(p (1 - p) / n) / f(z_p), at most about 0.02 for a unit normal's 5% to 95% quantiles
PRIOR_DRAWS = 20_000
#: draws made at a time (a VampPrior encodes its pseudo-inputs on each call)
DRAW_CHUNK = 4096


class CodeSource(Protocol):
    """What the grid needs of a prior: draws z ~ p(z), (n, d); `standard` for N(0, I)."""

    standard: bool

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor: ...


class ManifoldGrid(NamedTuple):
    """The grid: the two dimensions (i, j), column values of z_i (left to right, rising), row values of
    z_j (top to bottom, falling: up is high, as on a plot) and the code the other dimensions keep."""

    dims: tuple[int, int]
    probabilities: torch.Tensor  # (steps,) float64
    columns: torch.Tensor  # (steps,) z_i
    rows: torch.Tensor  # (steps,) z_j, highest first
    base: torch.Tensor  # (d,)
    exact: bool  # the standard prior's closed-form quantiles (else estimated from draws)

    def codes(self) -> torch.Tensor:
        """(steps * steps, d), row by row: cell (r, c) is base with z_i = columns[c], z_j = rows[r]."""
        i, j = self.dims
        rows, cols = len(self.rows), len(self.columns)
        z = self.base.expand(rows, cols, -1).clone()
        z[:, :, i] = self.columns[None, :].to(z)
        z[:, :, j] = self.rows[:, None].to(z)
        return z.flatten(0, 1)


def grid_probabilities(steps: int) -> torch.Tensor:
    """p_k = (k + 1/2) / steps, k = 0..steps-1: evenly spaced in (0, 1), float64."""
    return (torch.arange(steps, dtype=torch.float64) + 0.5) / steps


def manifold_dims(dims: int | Sequence[int], latent_dim: int) -> tuple[int, int]:
    """The two dimensions to sweep: `dims=[i,j]`, or (0, 1) of a 2-D latent space when dims is 0. Dims
    outside the latent space, or no choice for a space that is not 2-D, stop with one line."""
    if latent_dim < 2:
        raise ConfigError(
            f"mode=manifold sweeps two latent dimensions; this model has latent_dim={latent_dim}: use "
            f"mode=traverse"
        )
    if not isinstance(dims, int):
        i, j = (int(d) for d in dims)
        if max(i, j) >= latent_dim:
            raise ConfigError(
                f"dims=[{i},{j}]: the model has {latent_dim} latent dimensions, 0 to {latent_dim - 1}: pick two "
                f"of them"
            )
        return i, j
    if latent_dim != 2:
        raise ConfigError(
            f"mode=manifold on a {latent_dim}-D latent space: choose the two dimensions to sweep, dims=[i,j] "
            f"(e.g. the two of highest KL in vae evaluate's kl_per_dim)"
        )
    return 0, 1


@torch.no_grad()
def manifold_grid(
    prior: CodeSource,
    latent_dim: int,
    dims: tuple[int, int],
    steps: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> ManifoldGrid:
    """The quantile grid of `prior` over dimensions `dims` (see the module's docstring). A prior of
    one-hot codes (prior=uniform) has no quantiles between its 0s and 1s: refused in one line."""
    if getattr(prior, "categorical", False):
        raise ConfigError(
            "mode=manifold sweeps continuous codes; this model's prior draws one-hot codes (posterior="
            "categorical), which have no grid in between: use mode=mean"
        )
    p = grid_probabilities(steps)
    i, j = dims
    if getattr(prior, "standard", False):
        values = (temperature * torch.special.ndtri(p)).float().to(device)
        base = torch.zeros(latent_dim, device=device)
        return ManifoldGrid(dims, p, values, values.flip(0), base, exact=True)
    draws = prior_draws(prior, PRIOR_DRAWS, temperature, generator).cpu().double()
    quantiles = torch.quantile(draws[:, [i, j]], p, dim=0).float().to(device)
    base = draws.mean(0).float().to(device)
    return ManifoldGrid(dims, p, quantiles[:, 0], quantiles[:, 1].flip(0), base, exact=False)


def prior_draws(
    prior: CodeSource, n: int, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """n draws z ~ p(z), (n, d) float32, made DRAW_CHUNK at a time."""
    chunks = [
        prior.sample(min(DRAW_CHUNK, n - start), generator, temperature).float()
        for start in range(0, n, DRAW_CHUNK)
    ]
    return torch.cat(chunks)


def manifold_labels(grid: ManifoldGrid, source: str = "the prior") -> dict[str, object]:
    """What the picture says: which dimension each axis is, and the values along it; `source` names
    what the quantiles are of."""
    i, j = grid.dims
    how = "Phi^-1 of" if grid.exact else f"the marginal quantiles of {source} (estimated) at"
    steps = len(grid.columns)
    return {
        "title": [
            f"manifold: column = z{i} (rising to the right), row = z{j} (rising upwards), at {how} "
            f"p = (k + 1/2) / {steps}",
            *([f"the other dimensions at the mean of {source}"] if len(grid.base) > 2 else []),
        ],
        "row_labels": [f"z{j} {v:.2f}" for v in grid.rows.tolist()],
        "col_labels": [f"{v:.2f}" for v in grid.columns.tolist()],
    }
