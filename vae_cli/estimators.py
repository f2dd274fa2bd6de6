"""Per-example estimates from a trained model, in nats: the one place where evaluate, score and train
encode a split and bound its log-likelihood.

    recon      -(1/k) sum_i log p(x|z_i), z_i ~ q(z|x): the ELBO's reconstruction term, sampled
    kl         KL(q(z|x) || p(z)) per example: in closed form (as in training) for the Gaussian posterior and
               the standard prior, else -(1/k) sum_i log p(z_i) - log q(z_i|x) on the bound's draws
    kl_per_dim  per dimension, KL(q(z_j|x) || N(0, 1)) in closed form (`VAE.kl_per_dim`): it sums to kl
               in the closed-form case; otherwise that of the encoder's Gaussian, which dimensions carry
               information rather than a split of kl (a mixture or a flow does not factorise)
    neg_elbo   recon + kl: -ELBO, an upper bound on -log p(x)
    iwae_nll   -IWAE_k = -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) on the same draws (Burda et al. 2015):
               also an upper bound on -log p(x) in expectation, tighter than -ELBO and tightening with k
    discrete_*  recon, neg_elbo and iwae_nll under the model's likelihood read as a distribution of 8-bit
               pixels (`Likelihood.on_8bit_data`: a Gaussian's bin masses), from the same draws: upper
               bounds on -log P(x) of the 8-bit data where the model's own are those of a density
    recon_error  sum over dimensions of (x - E[x|z = mu(x)])^2, the squared error of the mean
               reconstruction in the model's input units: not a bound on anything

A plain autoencoder (objective=ae) has no KL and no bound: `reconstruct_split` gives its recon at
z = code(x), no draw, and its recon_error.

model=vqvae's posterior is a point mass at its code z_q(x): `code_bound_split` gives recon = -log p(x|z_q),
kl = -log p(z_q) under its code prior (per grid position in kl_per_dim), and neg_elbo = iwae_nll = their
sum: every draw of a point mass is the same one, so the importance-weighted bound is the ELBO.

Every pass draws from seeded generators, so the numbers move only when the model or the seed does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch

from vae_cli.console import batch_progress, console, duration
from vae_cli.data import make_batches, prepare_batch
from vae_cli.data.base import Split
from vae_cli.likelihoods import Likelihood
from vae_cli.models import VAE
from vae_cli.models.conditional import each_conditioned, with_labels
from vae_cli.models.vqvae import is_vqvae

#: decoded values (draws x examples x pixels) per pass of the importance-weighted bound, 16 MB in float32:
#: big enough for fast matrix products, small enough that the allocator reuses memory instead of asking
#: the OS for fresh pages every pass (measured: 2x faster on CPU than 64 MB passes)
VALUES_PER_PASS = 1 << 22

log = logging.getLogger("vae")

#: Outside a terminal (a log file, a CI job, a pipe), where no progress bar is drawn, a pass over a
#: split logs a line each time another PROGRESS_TENTHS tenths of its batches are done, or when
#: PROGRESS_SECONDS passed since the last line, whichever comes first; nothing during its first
#: PROGRESS_AFTER seconds, so that short passes stay quiet.
PROGRESS_TENTHS, PROGRESS_SECONDS, PROGRESS_AFTER = 1, 15.0, 5.0


class ProgressLog:
    """Progress lines for the log: `<label>: 30/100 batches (30%), 12 s so far, about 28 s left`."""

    def __init__(self, label: str, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.clock = label, max(1, total), clock
        self.start = self.last = clock()
        self.done = self.logged_tenths = 0

    def advance(self) -> None:
        self.done += 1
        now = self.clock()
        tenths = self.done * 10 // self.total
        due = tenths >= self.logged_tenths + PROGRESS_TENTHS or now - self.last >= PROGRESS_SECONDS
        if not due or now - self.start < PROGRESS_AFTER:
            return
        elapsed = now - self.start
        left = elapsed / self.done * (self.total - self.done)
        log.info(
            "%s: %d/%d batches (%d%%), %s so far, about %s left",
            self.label,
            self.done,
            self.total,
            100 * self.done // self.total,
            duration(elapsed),
            duration(left),
        )
        self.last, self.logged_tenths = now, tenths


def with_progress(batches: Sequence[Any], label: str) -> Iterator[Any]:
    """Each of `batches`, with a bar in a terminal; elsewhere (no bar is drawn there) lines in the log,
    with the time left."""
    lines = None if console.is_terminal else ProgressLog(label, len(batches))
    with batch_progress(label, eta=True) as bar:
        task = bar.add_task(label, total=len(batches))
        for batch in batches:
            yield batch
            bar.advance(task)
            if lines is not None:
                lines.advance()


class ImportanceEstimate(NamedTuple):
    """Per-example estimates, in nats, from the same k draws z_i ~ q(z|x)."""

    log_px: torch.Tensor  # (N,) IWAE_k = log (1/k) sum_i w_i, a lower bound on log p(x) that tightens with k
    log_px_given_z: torch.Tensor  # (N,) (1/k) sum_i log p(x|z_i): minus the ELBO's reconstruction term
    log_prior_ratio: torch.Tensor  # (N,) (1/k) sum_i log p(z_i) - log q(z_i|x): minus the KL, sampled

    @property
    def elbo(self) -> torch.Tensor:
        """(1/k) sum_i log w_i: the ELBO, never above `log_px` (Jensen's inequality, same draws)."""
        return self.log_px_given_z + self.log_prior_ratio


@torch.inference_mode()
def importance_weighted_bound(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ImportanceEstimate:
    """The importance-weighted bound of Burda et al. (2015) on log p(x), per example, in nats:

        log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),   z_i ~ q(z|x),  i = 1..k
        IWAE_k  = logsumexp_i(log w_i) - log k  <=  log p(x)

    x is encoded once (or not at all when its `posterior` (mu, logvar) is given); the k draws are decoded
    `chunk` at a time as one (chunk * N)-row batch, so memory stays bounded whatever k is. `chunk`
    defaults to about VALUES_PER_PASS decoded values a pass."""
    return importance_weighted_bounds(model, x, k, [model.likelihood], chunk, generator, posterior)[0]


@torch.inference_mode()
def importance_weighted_bounds(
    model: VAE,
    x: torch.Tensor,
    k: int,
    likelihoods: Sequence[Likelihood],
    chunk: int | None = None,
    generator: torch.Generator | None = None,
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[ImportanceEstimate]:
    """`importance_weighted_bound` with p(x|z) read by each of `likelihoods` from the same decodings of
    the same draws: one estimate per likelihood, for the price of one pass."""
    n = len(x)
    chunk = max(1, min(k, chunk or VALUES_PER_PASS // max(1, n * math.prod(x.shape[1:]))))
    mu, logvar = model.encode(x) if posterior is None else posterior
    mu, logvar = mu.float(), logvar.float()
    std = torch.exp(0.5 * logvar)
    ratios: list[torch.Tensor] = []
    log_px_z: list[list[torch.Tensor]] = [[] for _ in likelihoods]
    for start in range(0, k, chunk):
        s = min(chunk, k - start)
        z, ratio = draws_and_log_ratio(model, mu, logvar, std, s, generator)  # (s, N, latent), (s, N)
        params = model.decode(z.flatten(0, 1))
        params = params.view(s, len(x), *params.shape[1:])
        for scores, likelihood in zip(log_px_z, likelihoods, strict=True):
            scores.append(likelihood.log_prob(params, x))  # (s, N)
        ratios.append(ratio)
    ratio = torch.cat(ratios)  # (k, N)
    return [_estimate(torch.cat(scores), ratio, k) for scores in log_px_z]


def draws_and_log_ratio(
    model: VAE,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    std: torch.Tensor,
    s: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """s draws z ~ q(z|x) per example (s, N, latent) and log p(z) - log q(z|x) (s, N): the model's own
    posterior and prior; for N(mu, sigma^2) and N(0, I) in one expression, where the log(2 pi) terms
    cancel."""
    if not model.closed_form:
        z, log_q = model.posterior.rsample((mu, logvar), s, generator)
        return z, model.prior.log_prob(z) - log_q
    eps = torch.randn((s, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = torch.addcmul(mu, std, eps)
    # -1/2 sum_j (z_j^2 - eps_j^2 - logvar_j), in fused steps: each pass over (s, N, latent) costs a
    # thread barrier, which is what these small tensors cost on a busy machine
    return z, torch.addcmul(eps.square(), z, z, value=-1).sum(-1).add_(logvar.sum(-1)).mul_(0.5)


def _estimate(log_px_z: torch.Tensor, ratio: torch.Tensor, k: int) -> ImportanceEstimate:
    """The estimates from log p(x|z_i) and log p(z_i) - log q(z_i|x), each (k, N) float32; the sums over
    the k draws in float64."""
    log_w = (log_px_z + ratio).double()
    mean_log_px_z = log_px_z.double().mean(0)
    return ImportanceEstimate(
        torch.logsumexp(log_w, dim=0) - math.log(k), mean_log_px_z, log_w.mean(0) - mean_log_px_z
    )


def iwae_log_likelihood(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """IWAE_k estimate of log p(x) per example (N,), in nats; see `importance_weighted_bound`."""
    return importance_weighted_bound(model, x, k, chunk, generator).log_px


@torch.inference_mode()
def squared_error(likelihood: Likelihood, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """recon_error per example (N,) float64: the sum over data dimensions of (x - E[x|z])^2, E[x|z] the
    image the likelihood shows for the decoder's `params`."""
    mean = likelihood.mean(params).float()
    return (x.float() - mean).pow(2).flatten(1).sum(1).double()


def estimate_split(
    model: VAE,
    split: Split,
    *,
    binarize: str,
    k: int,
    seed: int,
    batch_size: int = 256,
    chunk: int | None = None,
    in_memory: str = "auto",
    recon_error: bool = False,
    label: str = "evaluate",
    discrete: Likelihood | None = None,
) -> dict[str, torch.Tensor]:
    """Every example's estimates (see the module's docstring) from k draws z ~ q(z|x) each:
    recon, kl, neg_elbo, iwae_nll (N,) float64, kl_per_dim (N, latent_dim) float64 and mu (N, latent_dim)
    float32 (the posterior's mean code), all on the CPU; with `recon_error`, also that (N,); with a
    `discrete` likelihood (the model's read as a distribution of 8-bit pixels: `Likelihood.on_8bit_data`),
    also discrete_recon,
    discrete_neg_elbo and discrete_iwae_nll (N,), under it, from the same draws. Binarised data is
    binarised once, with the generator of `seed` (the draws of z use seed + 1). model=vqvae: its
    deterministic code's numbers (`code_bound_split`; k and chunk do not apply)."""
    if is_vqvae(model):
        return code_bound_split(
            model, split, binarize=binarize, seed=seed, batch_size=batch_size, in_memory=in_memory,
            recon_error=recon_error, label=label, discrete=discrete,
        )  # fmt: skip
    device = next(model.parameters()).device
    data_generator = torch.Generator(device=device).manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
    batches = with_labels(make_batches(split, batch_size, False, seed, device, in_memory), split, model)
    columns: dict[str, list[torch.Tensor]] = {}
    likelihoods = [model.likelihood] if discrete is None else [model.likelihood, discrete]
    # (a conditional model: each batch's labels set while its body runs)
    for images in each_conditioned(model, with_progress(batches, label)):
        x = prepare_batch(images, binarize, data_generator)
        mu, logvar = model.encode(x)
        est, *also = importance_weighted_bounds(
            model, x, k, likelihoods, chunk, noise_generator, posterior=(mu, logvar)
        )
        kl_per_dim = model.kl_per_dim(mu, logvar).double()
        # the KL in closed form where it has one, else estimated on the bound's k draws
        kl = kl_per_dim.sum(1) if model.closed_form else -est.log_prior_ratio
        recon = -est.log_px_given_z
        code = model.posterior.mean((mu, logvar))
        batch = {
            "recon": recon,
            "kl": kl,
            "neg_elbo": recon + kl,
            "iwae_nll": -est.log_px,
            "kl_per_dim": kl_per_dim,
            "mu": code.float(),
        }
        for other in also:
            batch["discrete_recon"] = -other.log_px_given_z
            batch["discrete_neg_elbo"] = -other.log_px_given_z + kl
            batch["discrete_iwae_nll"] = -other.log_px
        if recon_error:
            batch["recon_error"] = squared_error(model.likelihood, model.decode(code), x)
        for name, values in batch.items():
            columns.setdefault(name, []).append(values.cpu())
    return {name: torch.cat(values) for name, values in columns.items()}


@torch.inference_mode()
def encode_split(model: VAE, split: Split, binarize: str, seed: int, batch_size: int = 256) -> torch.Tensor:
    """Every example's posterior mean code (mu(x) for the Gaussian), (N, latent_dim) float32 on the CPU.
    Binarised data is binarised once with its own stream (seed + 2), apart from the bounds' draws."""
    return encode_posterior(model, split, binarize, seed, batch_size)[0]


@torch.inference_mode()
def encode_posterior(
    model: VAE, split: Split, binarize: str, seed: int, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example's posterior mean code and the encoder's Gaussian's log-variance, each (N, latent_dim)
    float32 on the CPU, from the same binarisation stream as `encode_split` (seed + 2)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed + 2)
    batches = with_labels(make_batches(split, batch_size, False, seed, device), split, model)
    codes, logvars = [], []
    for images in each_conditioned(model, batches):
        x = prepare_batch(images, binarize, generator)
        if is_vqvae(model):  # a point mass at z_q(x): its log-variance is -inf
            code = model.code(x)
            codes.append(code.float().cpu())
            logvars.append(torch.full_like(code, -math.inf).float().cpu())
            continue
        mu, logvar = model.encode(x)
        codes.append(model.posterior.mean((mu, logvar)).float().cpu())
        logvars.append(logvar.float().cpu())
    model.train(was_training)
    if not codes:
        return torch.empty(0, model.latent_dim), torch.empty(0, model.latent_dim)
    return torch.cat(codes), torch.cat(logvars)


@torch.inference_mode()
def reconstruct_split(
    model: VAE,
    split: Split,
    *,
    binarize: str,
    seed: int,
    batch_size: int = 256,
    in_memory: str = "auto",
    label: str = "evaluate",
) -> dict[str, torch.Tensor]:
    """A deterministic autoencoder's numbers (objective=ae: no draw, no KL, no bound on log p(x)), per
    example, on the CPU: recon = -log p(x|z = code(x)) (N,) float64, its training loss; recon_error (N,)
    float64, sum over dimensions of (x - E[x|z = code(x)])^2; mu (N, latent_dim) float32, the codes.
    Binarised data is binarised once, with the generator of `seed`, as `estimate_split` does."""
    device = next(model.parameters()).device
    data_generator = torch.Generator(device=device).manual_seed(seed)
    batches = with_labels(make_batches(split, batch_size, False, seed, device, in_memory), split, model)
    columns: dict[str, list[torch.Tensor]] = {"recon": [], "recon_error": [], "mu": []}
    for images in each_conditioned(model, with_progress(batches, label)):
        x = prepare_batch(images, binarize, data_generator)
        code = model.code(x)
        params = model.decode(code)
        columns["recon"].append(model.likelihood.nll(params, x).double().cpu())
        columns["recon_error"].append(squared_error(model.likelihood, params, x).cpu())
        columns["mu"].append(code.float().cpu())
    if not columns["mu"]:
        empty = torch.empty(0, dtype=torch.float64)
        return {"recon": empty, "recon_error": empty, "mu": torch.empty(0, model.latent_dim)}
    return {name: torch.cat(values) for name, values in columns.items()}


@torch.inference_mode()
def code_bound_split(
    model: VAE,
    split: Split,
    *,
    binarize: str,
    seed: int,
    batch_size: int = 256,
    in_memory: str = "auto",
    recon_error: bool = False,
    label: str = "evaluate",
    discrete: Likelihood | None = None,
) -> dict[str, torch.Tensor]:
    """model=vqvae's per-example numbers, nats, on the CPU: its posterior q(z_q|x) = 1 is a point mass at
    the nearest codes z_q(x), so

        recon    = -log p(x|z_q)        kl = KL(q || p) = -log p(z_q), the code prior's (stage two)
        neg_elbo = recon + kl  >=  -log p(x),   iwae_nll = neg_elbo (every draw is z_q: IWAE_k = ELBO)

    (N,) float64 each; kl_per_dim (N, h * w) float64, -log p(z_i | z_<i) per grid position; mu (N, D * h *
    w) float32, z_q; indices (N, h * w) long, the codes; recon_error, discrete_* as `estimate_split`'s.
    Binarised data is binarised once, with the generator of `seed`."""
    device = next(model.parameters()).device
    data_generator = torch.Generator(device=device).manual_seed(seed)
    batches = make_batches(split, batch_size, False, seed, device, in_memory)
    columns: dict[str, list[torch.Tensor]] = {}
    for images in with_progress(batches, label):
        x = prepare_batch(images, binarize, data_generator)
        indices = model.indices(x)
        z = model.lookup(indices)
        params = model.decode(z)
        recon = model.likelihood.nll(params, x).double()
        per_position = -model.code_prior.log_prob_per_position(indices).double()
        kl = per_position.sum(1)
        batch = {
            "recon": recon,
            "kl": kl,
            "neg_elbo": recon + kl,
            "iwae_nll": recon + kl,
            "kl_per_dim": per_position,
            "mu": z.float(),
            "indices": indices,
        }
        if discrete is not None:
            discrete_recon = discrete.nll(params, x).double()
            batch["discrete_recon"] = discrete_recon
            batch["discrete_neg_elbo"] = batch["discrete_iwae_nll"] = discrete_recon + kl
        if recon_error:
            batch["recon_error"] = squared_error(model.likelihood, params, x)
        for name, values in batch.items():
            columns.setdefault(name, []).append(values.cpu())
    return {name: torch.cat(values) for name, values in columns.items()}
