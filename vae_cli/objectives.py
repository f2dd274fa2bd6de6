"""The objectives, per example, in nats: the (beta-weighted) evidence lower bound and the
importance-weighted bound.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
    loss    = recon + beta * KL,   recon = -E_q[log p(x|z)]   (one reparameterised sample of z)
    KL      in closed form for the Gaussian posterior and the standard prior, else the Monte Carlo
            estimate log q(z|x) - log p(z) on the same draw

    IWAE_k(x) = E[log (1/k) sum_i w_i],  log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)   (Burda et al.)

    factor  FactorVAE (Kim & Mnih 2018): recon + beta * KL + gamma * TC, the total correlation of q(z)
            estimated by a discriminator trained beside the VAE (vae_cli/total_correlation.py)
    ae      the plain autoencoder: z = the posterior's mean code, no draw, no KL: loss = recon

    btcvae    beta-TCVAE (Chen et al. 2018): the KL split into MI + TC + dimension-wise KL, each weighted
    dip       DIP-VAE I/II (Kumar et al. 2018): the ELBO + a penalty on the codes' covariance's distance to I
    capacity  the capacity-annealed beta-VAE (Burgess et al. 2018): recon + gamma * |KL - C|, C growing
    mmd       InfoVAE / WAE-MMD (Zhao et al. 2019; Tolstikhin et al. 2018): recon + lambda * MMD(q(z), p(z))
              (+ (1 - alpha) * KL); not a bound on log p(x)
    vq        model=vqvae's (van den Oord et al. 2017): recon + beta_c ||z_e - sg(z_q)||^2 (+ the codebook
              loss), its KL log K per code under the uniform prior of the first stage (vae_cli/models/vqvae.py)

Every term is summed over data (or latent) dimensions and averaged over the batch, so numbers are nats
per example and compare with papers. beta = 1 is the ELBO; there are no hidden scaling constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
from omegaconf import OmegaConf

from vae_cli.config.objectives import DIP_DIAGONAL_FACTOR
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import Likelihood
from vae_cli.models import VAE, VAEOutput
from vae_cli.models.posteriors import LOG_2PI
from vae_cli.models.vqvae import perplexity
from vae_cli.registry import Registry
from vae_cli.total_correlation import TCDiscriminator


class Terms(NamedTuple):
    recon: torch.Tensor  # (N,) -log p(x|z), averaged over the draws of z
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z)): closed form, else estimated on the draws of z
    kl_per_dim: torch.Tensor | None  # (N, latent_dim) where the KL has a closed form, else None
    bound: torch.Tensor | None = None  # (N,) the importance-weighted bound, when that is the objective
    latent_dims: int = 0  # d: free bits without a KL per dimension floor the whole KL at d * free_bits
    penalty: torch.Tensor | None = None  # (N,) nats added to the loss as is: FactorVAE's gamma * TC
    codes: torch.Tensor | None = None  # (N, d) the codes drawn, for an objective's companion to train on
    regulariser: torch.Tensor | None = None  # (N,) nats that replace beta * KL in the loss (capacity, mmd)
    #: an objective's own terms, batch means in nats (TC, MMD, ...), detached: logged as train/<name>,
    #: averaged over validation and test into metrics.json; None (the ELBO) costs the training step nothing
    extras: dict[str, torch.Tensor | float] | None = None

    def loss(self, beta: float, free_bits: float = 0.0, trim: float = 0.0) -> torch.Tensor:
        """The training loss, averaged over the batch.

        ELBO: recon + beta * KL; with free bits (Kingma et al. 2016), each latent dimension's KL, averaged
        over the batch, counts as at least `free_bits` nats, so the loss never pushes it below that floor.
        IWAE: -IWAE_k, with beta already inside the importance weights. A `regulariser` (beta already
        applied) takes the place of beta * KL, and free bits do not apply to it. A `penalty` (FactorVAE's
        gamma * TC) is added to any of them, per example.

        `trim` > 0 (robust training, `train.trim`): the examples with the highest loss, that share of the
        batch, are left out of the average (a trimmed mean), so outliers among the training data give no
        gradient: the model does not learn to explain them."""
        if trim > 0 and len(self.recon) > 1:
            regulariser = beta * self.kl if self.regulariser is None else self.regulariser
            per_example = -self.bound if self.bound is not None else self.recon + regulariser
            if self.penalty is not None:
                per_example = per_example + self.penalty
            keep = max(1, round(len(per_example) * (1 - trim)))
            kept = torch.topk(per_example.detach(), keep, largest=False).indices
            picked = (t[kept] if isinstance(t, torch.Tensor) else t for t in self)
            return Terms(*picked).loss(beta, free_bits)
        penalty = 0.0 if self.penalty is None else self.penalty.mean()
        if self.bound is not None:
            return -self.bound.mean() + penalty
        if self.regulariser is not None:
            return self.recon.mean() + self.regulariser.mean() + penalty
        if free_bits <= 0:
            kl = self.kl.mean()
        elif self.kl_per_dim is not None:
            kl = self.kl_per_dim.mean(0).clamp(min=free_bits).sum()
        else:  # no KL per dimension (a mixture prior, a flow): the latent as one group of free bits
            kl = self.kl.mean().clamp(min=free_bits * self.latent_dims)
        return self.recon.mean() + beta * kl + penalty


class Objective(NamedTuple):
    """A training objective: `terms(out, target, likelihood, cfg, beta) -> Terms`, a pure function of the
    model's output, and how that output must be drawn for it: `samples(cfg)` codes per example (0: none,
    the posterior's mean code), and whether it reads log q and log p of the draws (`densities`) even
    where the KL has a closed form.

    `companion`, for an objective that trains a model of its own beside the VAE (FactorVAE's
    discriminator): `companion(cfg, latent_dim, device, dist, seed)` builds it once per run; its terms
    function then takes it as a sixth argument, and the training step calls its `step(codes)` after the
    VAE's backward pass. Its `state_dict()` goes into the checkpoints.

    `context`: its terms function takes a keyword `context`, a `Context` (the model, the optimisation
    step, the generator), for what the model's output does not hold (prior draws, a schedule)."""

    terms: Callable[..., Terms]
    samples: Callable[[Any], int]
    densities: bool
    companion: Callable[..., Any] | None = None
    context: bool = False

    def __call__(
        self,
        model: VAE,
        x: torch.Tensor,
        cfg: Any,
        beta: float,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        forward: Callable[..., VAEOutput] | None = None,
        companion: Any = None,
        step: int | None = None,
    ) -> Terms:
        """The terms for inputs x; `target` (default x) is what the likelihood scores. `forward` runs the
        model's forward pass when it is wrapped (torch.compile, DistributedDataParallel); `companion` is
        the objective's own trained model, when it has one (see the class); `step`, the optimisation
        step in training (None in evaluation), reaches the objectives that take a context."""
        out = (model if forward is None else forward)(x, generator, self.samples(cfg), self.densities)
        target = x if target is None else target
        if self.context:
            context = Context(model, step, generator)
            return self.terms(out, target, model.likelihood, cfg, beta, context=context)
        if self.companion is None:
            return self.terms(out, target, model.likelihood, cfg, beta)
        if companion is None:
            raise ValueError("this objective needs its companion (Objective.companion builds it)")
        return self.terms(out, target, model.likelihood, cfg, beta, companion)


def sampled_kl(out: VAEOutput) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example (N,): the closed form where the model gives one, else the Monte Carlo
    estimate (1/k) sum_i log q(z_i|x) - log p(z_i) on the draws."""
    if out.kl_per_dim is not None:
        return out.kl_per_dim.sum(1)
    return (out.log_q - out.log_p).mean(0)


def elbo(out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float) -> Terms:
    """The (beta-weighted) ELBO's terms; beta enters through `Terms.loss`."""
    recon = likelihood.nll(out.params, target)
    return Terms(recon, sampled_kl(out), out.kl_per_dim, latent_dims=out.z.shape[-1])


def iwae(out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float) -> Terms:
    """The importance-weighted bound with k = out's draws, differentiable, for training (Burda et al. 2015):

        log w_i = log p(x|z_i) + beta * (log p(z_i) - log q(z_i|x)),   bound = logsumexp_i log w_i - log k

    At k = 1 it is the ELBO with a one-sample estimate of the KL; beta = 1 gives the IWAE bound."""
    k, n = out.log_q.shape
    log_px_z = likelihood.log_prob(out.params.view(k, n, *out.params.shape[1:]), target)
    bound = torch.logsumexp(log_px_z + beta * (out.log_p - out.log_q), dim=0) - math.log(k)
    return Terms(-log_px_z.mean(0), sampled_kl(out), out.kl_per_dim, bound, out.z.shape[-1])


def factor(
    out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float, discriminator: Any
) -> Terms:
    """FactorVAE (Kim & Mnih 2018): the (beta-weighted) ELBO plus gamma * TC, per example,

        TC(z) ~ log D(z) / (1 - D(z)) ~ log q(z) / prod_j q(z_j)   (the density-ratio trick),

    the discriminator's logit at the example's code z ~ q(z|x): its batch mean estimates the total
    correlation KL(q(z) || prod_j q(z_j)), logged as `tc`. The VAE's gradient reaches the encoder
    through z; the discriminator learns apart, in its own step on `codes` (vae_cli/total_correlation.py),
    whose accuracy and loss join the extras there."""
    terms = elbo(out, target, likelihood, cfg, beta)
    tc = discriminator.log_ratio(out.z)
    return terms._replace(penalty=cfg.gamma * tc, codes=out.z, extras={"tc": tc.detach().mean()})


def ae(out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float) -> Terms:
    """The plain autoencoder: recon = -log p(x|z) at z = the posterior's mean code (out is the model's
    deterministic pass, samples = 0); no KL (zero, so beta and the KL warm-up change nothing). With
    train.denoise, the input is corrupted and the target clean: the denoising autoencoder (Vincent et al.
    2008)."""
    recon = likelihood.nll(out.params, target)
    return Terms(recon, torch.zeros_like(recon), None, latent_dims=out.z.shape[-1])


# --- the disentangling objectives: beta-TCVAE, DIP-VAE, the capacity-annealed beta-VAE, InfoVAE/WAE-MMD --
#
# Each reshapes the ELBO's regulariser; the top-level beta (with its warm-up) scales each one's whole
# regulariser, everything but the reconstruction, so beta = 1 gives the papers' objectives. Each reports
# its own terms in Terms.extras (batch means, nats), which training logs as train/<name>, and validation
# and test average into metrics.json (val/<name>, test/<name>).


class Context(NamedTuple):
    """What an objective registered with `context=True` reads besides the model's output."""

    model: VAE  # its prior (the MMD's draws) and posterior (what an estimator needs of them)
    step: int | None  # the optimisation step in training; None in evaluation: schedules at their end
    generator: torch.Generator | None  # for the objective's own draws (evaluation is seeded)


def require(ok: bool, name: str, needs: str) -> None:
    """Refuse in one line a model the config check could not see by name (a ladder's prior and posterior)."""
    if not ok:
        raise ConfigError(f"objective={name} needs {needs}, which this model does not have")


def pairwise_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_ij | x_k) = log N(z_ij; mu_kj, sigma_kj^2) for every code i and posterior k of a batch,
    per dimension j: (M, M, d), indexed [i, k, j]."""
    z, mu, logvar = z[:, None], mu[None], logvar[None]
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI)


def batch_log_weights(m: int, dataset_size: int, estimator: str, like: torch.Tensor) -> torch.Tensor:
    """log w_ik (M, M): the weight of posterior k in the estimate q(z_i) ~ sum_k w_ik q(z_i|x_k).

    mws, minibatch-weighted sampling (Chen et al. 2018, eq. 3): w = 1 / (N M) for every k.
    mss, stratified: w_ii = 1 / N for the code's own posterior, w_ik = (N - 1) / (N (M - 1)) for the
    M - 1 others, an unbiased estimate of (1/N) sum_n q(z_i|x_n) when they are drawn from the rest of the
    data; the weights sum to 1, so a factorised q gives TC = 0 exactly (with M = 1: the own posterior)."""
    n = dataset_size
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), dtype=like.dtype, device=like.device)
    if m == 1:
        return like.new_zeros((1, 1))
    others = math.log(n - 1) - math.log(n * (m - 1)) if n > 1 else -math.inf
    weights = torch.full((m, m), others, dtype=like.dtype, device=like.device)
    return weights.fill_diagonal_(-math.log(n))


def tc_decomposition(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int, estimator: str = "mss"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The KL of the Gaussian posterior to N(0, I), split as in Chen et al. (2018), per code z_i (M,):

        MI_i     = log q(z_i|x_i) - log q(z_i)               index-code mutual information
        TC_i     = log q(z_i) - sum_j log q(z_ij)            total correlation
        dimKL_i  = sum_j log q(z_ij) - log N(z_ij; 0, 1)     dimension-wise KL

    with q(z_i) and the marginals q(z_ij) estimated on the batch (`batch_log_weights`). The three sum to
    log q(z_i|x_i) - log p(z_i), the one-draw estimate of the KL, whatever the estimator."""
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    per_dim = pairwise_log_q(z, mu, logvar)  # [i, k, j]
    log_w = batch_log_weights(len(z), dataset_size, estimator, per_dim)[..., None]
    log_q_marginals = torch.logsumexp(per_dim + log_w, dim=1)  # (M, d)
    log_q_z = torch.logsumexp(per_dim.sum(2) + log_w[..., 0], dim=1)  # (M,)
    log_q_zx = per_dim.diagonal(dim1=0, dim2=1).sum(0)  # (M,) the code's own posterior
    log_p = -0.5 * (z.pow(2) + LOG_2PI)  # (M, d)
    mi = log_q_zx - log_q_z
    tc = log_q_z - log_q_marginals.sum(1)
    dim_kl = (log_q_marginals - log_p).sum(1)
    return mi, tc, dim_kl


def btcvae(
    out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float, *, context: Context
) -> Terms:
    """beta-TCVAE (Chen et al. 2018): recon + beta * (alpha MI + beta_tc TC + gamma dimKL), written as the
    ELBO plus what the weights change,

        loss_i = recon_i + beta * (KL_i + (alpha - 1) MI_i + (beta_tc - 1) TC_i + (gamma - 1) dimKL_i)

    with the closed-form KL: the same expectation as the paper's sum of three estimates (they sum to the
    one-draw KL), and exactly the ELBO at alpha = beta_tc = gamma = 1."""
    require(context.model.closed_form, "btcvae", "the Gaussian posterior with the standard prior N(0, I)")
    if cfg.dataset_size is None:
        raise ValueError("objective.dataset_size is resolved by vae train (vae_cli/config/auto.py)")
    terms = elbo(out, target, likelihood, cfg, beta)
    mi, tc, dim_kl = tc_decomposition(out.z, out.mu, out.logvar, cfg.dataset_size, cfg.estimator)
    penalty = beta * ((cfg.alpha - 1) * mi + (cfg.beta - 1) * tc + (cfg.gamma - 1) * dim_kl)
    extras = {"mi": mi.mean().detach(), "tc": tc.mean().detach(), "dim_kl": dim_kl.mean().detach()}
    return terms._replace(penalty=penalty, extras=extras)


def covariance(x: torch.Tensor) -> torch.Tensor:
    """The batch's covariance of the rows of x (M, d): E[x x^T] - E[x] E[x]^T, (d, d), divided by M."""
    centred = x - x.mean(0)
    return centred.T @ centred / len(x)


def dip_covariance(mu: torch.Tensor, logvar: torch.Tensor, variant: str) -> torch.Tensor:
    """DIP-VAE's covariance (Kumar et al. 2018), on the batch: Cov_x[mu(x)] (i), or that of z under the
    aggregate posterior, Cov_q(z)[z] = E_x[diag sigma^2(x)] + Cov_x[mu(x)] (ii)."""
    mu, logvar = mu.float(), logvar.float()
    cov = covariance(mu)
    if variant == "ii":
        cov = cov + torch.diag(logvar.exp().mean(0))
    return cov


def dip_penalties(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_{i != j} Cov_ij^2, sum_i (Cov_ii - 1)^2): the covariance's distance to the identity, off and on
    the diagonal."""
    diagonal = torch.diagonal(cov)
    return (cov.pow(2).sum() - diagonal.pow(2).sum()), (diagonal - 1).pow(2).sum()


def dip(
    out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float, *, context: Context
) -> Terms:
    """DIP-VAE (Kumar et al. 2018): recon + beta * (KL + lambda_od * offdiag + lambda_d * diag), the
    penalties of `dip_penalties` on `dip_covariance`, one per batch (shared by its examples). lambda_d
    null is the paper's: 10 * lambda_od for DIP-VAE-I, lambda_od for II."""
    require(context.model.posterior.gaussian, "dip", "the Gaussian posterior (its mean and covariance)")
    terms = elbo(out, target, likelihood, cfg, beta)
    off, diag = dip_penalties(dip_covariance(out.mu, out.logvar, cfg.variant))
    lambda_d = cfg.lambda_d if cfg.lambda_d is not None else DIP_DIAGONAL_FACTOR[cfg.variant] * cfg.lambda_od
    penalty = beta * (cfg.lambda_od * off + lambda_d * diag)
    extras = {"dip_offdiag": off.detach(), "dip_diag": diag.detach()}
    return terms._replace(penalty=penalty.expand(len(terms.recon)), extras=extras)


def capacity_at(step: int | None, capacity: float, steps: int | None) -> float:
    """The capacity C, growing linearly from 0 to `capacity` nats over `steps` optimisation steps;
    `capacity` itself in evaluation (step None) and when steps is 0."""
    if step is None or not steps:
        return capacity
    return capacity * min(1.0, step / steps)


def capacity(
    out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float, *, context: Context
) -> Terms:
    """The capacity-annealed beta-VAE (Burgess et al. 2018): recon + beta * gamma * |KL - C|, with KL the
    batch's mean (closed form, else estimated on the draws) and C = `capacity_at` the step, one term per
    batch shared by its examples."""
    recon = likelihood.nll(out.params, target)
    kl = sampled_kl(out)
    c = capacity_at(context.step, cfg.capacity, cfg.capacity_steps)
    regulariser = beta * cfg.gamma * (kl.mean() - c).abs()
    return Terms(
        recon,
        kl,
        out.kl_per_dim,
        latent_dims=out.z.shape[-1],
        regulariser=regulariser.expand(len(recon)),
        extras={"capacity": c},
    )


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, scale: float) -> torch.Tensor:
    """k(a_i, b_j) (n, m) with C = 2 d scale (Tolstikhin et al. 2018, scale = the prior's variance):
    imq, C / (C + |a - b|^2); rbf, exp(-|a - b|^2 / C)."""
    c = 2 * a.shape[-1] * scale
    squared = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp(min=0)
    return c / (c + squared) if kernel == "imq" else torch.exp(-squared / c)


def mmd_u(x: torch.Tensor, y: torch.Tensor, kernel: str, scale: float) -> torch.Tensor:
    """The unbiased U-statistic estimate of MMD^2 between the samples x (n, d) and y (m, d) (Gretton et al.
    2012): the means of k over the pairs i != j within x and within y, less twice the mean over x, y."""
    n, m = len(x), len(y)
    kxx, kyy = kernel_matrix(x, x, kernel, scale), kernel_matrix(y, y, kernel, scale)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kernel_matrix(x, y, kernel, scale).mean()


def mmd(
    out: VAEOutput, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float, *, context: Context
) -> Terms:
    """InfoVAE / WAE-MMD (Zhao et al. 2019; Tolstikhin et al. 2018): recon + beta * ((1 - alpha) KL +
    lambda_mmd * MMD^2(q(z), p(z))), the MMD between the batch's codes z ~ q(z|x) and as many draws from
    the model's prior (`mmd_u`; 0 for a batch of one, which has no pairs). Zhao et al.'s weight on the
    divergence, alpha + lambda - 1, is lambda_mmd here."""
    recon = likelihood.nll(out.params, target)
    kl = sampled_kl(out)
    z = out.z.float()
    divergence = z.new_zeros(())
    if len(z) > 1:
        prior = context.model.prior.sample(len(z), context.generator).to(z)
        divergence = mmd_u(z, prior, cfg.kernel, cfg.scale)
    regulariser = beta * ((1 - cfg.alpha) * kl + cfg.lambda_mmd * divergence)
    return Terms(
        recon,
        kl,
        out.kl_per_dim,
        latent_dims=out.z.shape[-1],
        regulariser=regulariser,
        extras={"mmd": divergence.detach()},
    )


def vq(out: Any, target: torch.Tensor, likelihood: Likelihood, cfg: Any, beta: float) -> Terms:
    """model=vqvae's objective (van den Oord et al. 2017) from its forward pass (`VQOutput`):

        loss = -log p(x|z_q) + beta_c ||z_e - sg(z_q)||^2 (+ ||sg(z_e) - z_q||^2 with codebook_update=loss)

    the VQ terms (weighted by the model's commitment, summed over the grid) as the `regulariser`; the KL
    is that of the deterministic posterior to the uniform prior over the codes, L log K, constant (recon + KL
    bounds -log p(x) under that prior; the second stage's code prior tightens it in `vae evaluate`). The
    extras: the batch's codebook usage (the share of entries any encoding chose), the perplexity of its
    code counts (entries in effective use), the unweighted commitment and the dead entries restarted."""
    recon = likelihood.nll(out.params, target)
    counts = out.counts
    extras = {
        "codebook_usage": (counts > 0).float().mean(),
        "perplexity": perplexity(counts),
        "commitment": out.commitment.detach().mean(),
    }
    if out.restarted is not None:  # training: the dead entries reset in this step
        extras["restarted"] = out.restarted
    return Terms(recon, torch.full_like(recon, out.uniform_kl), None, regulariser=out.vq_loss, extras=extras)


#: name (`objective=<name>`) -> Objective; called as objective(model, x, cfg, beta, target=, generator=,
#: forward=, companion=) -> Terms, with `cfg` the objective's own config section (its schema in
#: vae_cli/config), read once per epoch
OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.register("elbo")(Objective(elbo, lambda cfg: 1, densities=False))
OBJECTIVES.register("iwae")(Objective(iwae, lambda cfg: cfg.k, densities=True))
OBJECTIVES.register("factor")(Objective(factor, lambda cfg: 1, False, companion=TCDiscriminator))
OBJECTIVES.register("ae")(Objective(ae, lambda cfg: 0, densities=False))
OBJECTIVES.register("btcvae")(Objective(btcvae, lambda cfg: 1, densities=False, context=True))
OBJECTIVES.register("dip")(Objective(dip, lambda cfg: 1, densities=False, context=True))
OBJECTIVES.register("capacity")(Objective(capacity, lambda cfg: 1, densities=False, context=True))
OBJECTIVES.register("mmd")(Objective(mmd, lambda cfg: 1, densities=False, context=True))
OBJECTIVES.register("vq")(Objective(vq, lambda cfg: 1, densities=False))


def draws_no_codes(config: Any) -> bool:
    """Whether a run's objective (its config's `objective` section) encodes deterministically, drawing no
    codes (objective=ae): the model has no KL and no prior to sample, and no bound on log p(x)."""
    section = config.get("objective") or {"name": "elbo"}  # a DictConfig, or a checkpoint's dict
    name = section.get("name")
    return name in OBJECTIVES.names() and OBJECTIVES.get(name).samples(OmegaConf.create(section)) == 0


def elbo_terms(
    model: VAE,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The ELBO's terms for inputs x (see `Objective.__call__` for the keywords)."""
    return OBJECTIVES.get("elbo")(model, x, None, 1.0, target=target, generator=generator, forward=forward)


def iwae_terms(
    model: VAE,
    x: torch.Tensor,
    k: int,
    beta: float = 1.0,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    forward: Callable[..., VAEOutput] | None = None,
) -> Terms:
    """The importance-weighted bound's terms with k draws (see `iwae`)."""
    cfg = SimpleNamespace(k=k)
    return OBJECTIVES.get("iwae")(model, x, cfg, beta, target=target, generator=generator, forward=forward)


def beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """beta ramps linearly from 0 to its value over `warmup_steps` optimisation steps (KL warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
