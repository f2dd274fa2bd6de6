"""The approximate posteriors q(z|x), registered by name (`posterior=<name>`).

The encoder maps x to the parameters of a diagonal Gaussian, (mu, logvar) = h; a posterior turns h into

    rsample(h, k, generator) -> z (k, N, d), log q(z|x) (k, N)   reparameterised draws and their density
    mean(h) -> (N, d)                                            the code used to reconstruct, traverse, probe
    kl(h, prior) -> (N, d) or None                               KL(q || p) per dimension, where closed form

posterior=categorical's codes are one-hot blocks instead (their relaxation in training); see
CategoricalPosterior.

Every draw comes from `generator` when one is given (evaluation is seeded); without one (training, and
what torch.compile traces), from the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vae_cli.config.fields import check
from vae_cli.config.posteriors import NEEDS_UNIFORM, UNIFORM_ONLY, classes_problem, tau_rule
from vae_cli.errors import ConfigError
from vae_cli.registry import Registry

LOG_2PI = math.log(2 * math.pi)

#: name -> builder(cfg, latent_dim) -> Posterior
POSTERIORS: Registry[Callable[..., Posterior]] = Registry("posterior")

Params = tuple[torch.Tensor, torch.Tensor]  # (mu, logvar), each (N, d)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per latent dimension, in closed form:
    0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def standard_normal(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """eps ~ N(0, I) of `shape`, on `like`'s device and dtype, from `generator` (None: the global RNG)."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def gaussian_draws(
    mu: torch.Tensor, logvar: torch.Tensor, k: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """k draws z = mu + sigma * eps of N(mu, diag(sigma^2)), (k, N, d), and their log density (k, N):
    log q(z) = -0.5 * sum_j (eps_j^2 + log sigma_j^2 + log 2 pi)."""
    mu, logvar = mu.float(), logvar.float()
    eps = standard_normal((k, *mu.shape), mu, generator)
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
    return z, log_q


class Posterior(nn.Module):
    """q(z|x) from the encoder's (mu, logvar)."""

    #: True for the diagonal Gaussian itself: with the standard prior, the model takes the closed-form path
    gaussian: bool = False
    #: True for one-hot codes (posterior=categorical): evaluation's bounds are then the discrete model's
    discrete: bool = False

    def pair(self, prior: nn.Module) -> nn.Module:
        """The prior this posterior is used with (create_model joins them): `prior`, checked. A prior of
        one-hot codes (prior=uniform) serves posterior=categorical only."""
        if getattr(prior, "categorical", False):
            raise ConfigError(UNIFORM_ONLY)
        return prior

    def at_step(self, step: int) -> None:
        """Called by the training loop before each optimisation step (a schedule's clock); most have none."""

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def mean(self, h: Params) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, h: Params, prior: nn.Module) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per dimension (N, d) where it has a closed form; else None, and the
        objectives use the Monte Carlo estimate log q(z|x) - log p(z) on the draws."""
        return None


class GaussianPosterior(Posterior):
    """N(mu(x), diag(sigma^2(x))): the reparameterised draw; KL to N(0, I) in closed form."""

    gaussian = True

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_draws(*h, k, generator)

    def mean(self, h: Params) -> torch.Tensor:
        return h[0]

    def kl(self, h: Params, prior: nn.Module) -> torch.Tensor | None:
        return gaussian_kl(*h) if getattr(prior, "standard", False) else None


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class IafStep(nn.Module):
    """One inverse autoregressive flow step (Kingma et al. 2016, their numerically stable form):

        [m, s] = MADE(z, h),  sigma = sigmoid(s),  z' = sigma * z + (1 - sigma) * m,
        log |det dz'/dz| = sum_j log sigma_j

    m_j and s_j depend on z_<j only (and on the context h), so the Jacobian is triangular with diagonal
    sigma. The context h = [mu, log sigma^2] of the Gaussian (not z) enters unmasked."""

    def __init__(self, latent_dim: int, hidden: int, context_dim: int) -> None:
        super().__init__()
        d = latent_dim
        # MADE degrees: input j has degree j + 1, hidden units cycle through 1..d-1, output j has j + 1;
        # a unit sees an input of lower-or-equal degree, an output sees hidden units of strictly lower degree
        inputs = torch.arange(1, d + 1)
        units = torch.arange(hidden) % max(1, d - 1) + 1
        self.hidden = MaskedLinear(d, hidden, (units[:, None] >= inputs[None, :]))
        self.out = MaskedLinear(hidden, 2 * d, (inputs.repeat(2)[:, None] > units[None, :]))
        self.context_hidden = nn.Linear(context_dim, hidden)
        self.context_out = nn.Linear(context_dim, 2 * d)  # z_1's m and s depend on h alone
        self.act = nn.ELU()
        # start near the identity: sigma = sigmoid(s) close to 1 (the paper's forget-gate bias)
        nn.init.constant_(self.context_out.bias[d:], 2.0)

    def conditioning(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The context's share of the hidden units and of [m, s], once per example (N, .): it broadcasts
        over the k draws of z, which need not carry k copies of it."""
        return self.context_hidden(h), self.context_out(h)

    def forward(
        self, z: torch.Tensor, conditioning: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z' and log |det dz'/dz| (z's leading shape (..., N)), given `conditioning(h)`."""
        context_hidden, context_out = conditioning
        hidden = self.act(self.hidden(z) + context_hidden)
        m, s = (self.out(hidden) + context_out).chunk(2, dim=-1)
        log_sigma = nn.functional.logsigmoid(s)
        sigma = log_sigma.exp()
        return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)


class IafPosterior(Posterior):
    """The Gaussian's draw z0 through `steps` IAF steps, the order of the dimensions reversed between
    steps: log q(z_T|x) = log N(z0; mu, sigma^2) - sum_t log |det dz_t/dz_{t-1}|, exact. No closed-form KL."""

    def __init__(self, latent_dim: int, steps: int, hidden: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(IafStep(latent_dim, hidden, 2 * latent_dim) for _ in range(steps))

    def flow(self, z: torch.Tensor, h: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """z0 (..., N, d) through every step: (z_T, the summed log |det| (..., N))."""
        context = torch.cat([t.float() for t in h], dim=-1)  # (N, 2d)
        log_det = z.new_zeros(z.shape[:-1])
        for i, step in enumerate(self.steps):
            if i:
                z = z.flip(-1)  # each step conditions on the other order
            z, ld = step(z, step.conditioning(context))
            log_det = log_det + ld
        if len(self.steps) % 2 == 0:
            z = z.flip(-1)  # back to the dimensions' own order (an odd count ends in it already)
        return z, log_det

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z0, log_q0 = gaussian_draws(*h, k, generator)
        z, log_det = self.flow(z0, h)
        return z, log_q0 - log_det

    def mean(self, h: Params) -> torch.Tensor:
        """The flow's image of the Gaussian's mean (E[z|x] has no closed form): z_T at eps = 0."""
        return self.flow(h[0].float(), h)[0]


def gumbel(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """g ~ Gumbel(0, 1) of `shape`: -log(-log u), u ~ U(0, 1) kept off 0 (where it would be -inf)."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))


class CategoricalPosterior(Posterior):
    """N = d / K categorical variables of K classes, q(z_j = c|x) = softmax(logits_j)_c, the logits being
    the encoder's first half (its mu; the logvar half is unused). A code is the N one-hot blocks, (..., d).

    Draws use the Gumbel-max trick, c_j = argmax_c (log pi_jc + g_jc) with g ~ Gumbel(0, 1), an exact draw
    of each class, and log q(z|x) = sum_j log pi_{j, c_j}, exact for the one-hot code. Where a gradient
    flows in training (module.train() with autograd on), z is instead the Gumbel-softmax relaxation of the
    same draw (Jang et al. 2017; the Concrete of Maddison et al. 2017),

        y_j = softmax((log pi_j + g_j) / tau),

    whose argmax is c_j, so log q is still that of the class it relaxes; with `straight_through`, z is the
    one-hot c_j carrying y's gradient. Everywhere else (validation, evaluate, score, sample) z is one-hot:
    the discrete model itself, so the IWAE bound on its draws is the exact bound on log p(x) of the
    discrete model. tau is annealed as tau_t = max(tau_min, tau exp(-r t)) (Jang et al.), t the step.

    The KL to the uniform prior is in closed form on the categorical (not on the relaxed density):
    KL(q_j || U) = sum_c pi_jc log(K pi_jc), per variable; per code dimension, each variable's KL is split
    equally over its K values, so that it sums to the KL and every share is >= 0 (free bits, listings)."""

    discrete = True

    def __init__(
        self,
        latent_dim: int,
        classes: int,
        tau: float,
        tau_min: float,
        anneal_rate: float,
        straight_through: bool = False,
    ) -> None:
        super().__init__()
        rule = classes_problem(latent_dim, classes)  # (vae train checks both before any work)
        check(rule is None, "latent_dim", latent_dim, rule or "")
        check(tau_min <= tau, "posterior.tau_min", tau_min, tau_rule(tau))
        self.classes, self.variables = classes, latent_dim // classes
        self.schedule = (tau, tau_min, anneal_rate)
        self.straight_through = straight_through
        # a tensor, not a float attribute, so that torch.compile does not recompile as it anneals; not
        # in the state_dict: it is a function of the step, which the loop passes (`at_step`), resume too
        self.register_buffer("tau", torch.tensor(float(tau)), persistent=False)

    def temperature(self, step: int) -> float:
        """tau_t = max(tau_min, tau exp(-r t)) at optimisation step t (Jang et al. 2017)."""
        tau, tau_min, rate = self.schedule
        return max(tau_min, tau * math.exp(-rate * step))

    def at_step(self, step: int) -> None:
        self.tau.fill_(self.temperature(step))

    def pair(self, prior: nn.Module) -> nn.Module:
        """The uniform categorical prior over the same variables, told their K."""
        if not getattr(prior, "categorical", False):
            raise ConfigError(NEEDS_UNIFORM)
        prior.classes = self.classes
        return prior

    def log_probs(self, h: Params) -> torch.Tensor:
        """log pi (N, variables, K) from the logits, float32."""
        return torch.log_softmax(h[0].float().unflatten(-1, (self.variables, self.classes)), dim=-1)

    def relaxed(self) -> bool:
        """Whether draws are relaxed: only where a gradient flows through them, in training."""
        return self.training and torch.is_grad_enabled()

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_pi = self.log_probs(h)
        scores = log_pi + gumbel((k, *log_pi.shape), log_pi, generator)  # (k, N, variables, K)
        chosen = scores.argmax(-1, keepdim=True)  # the Gumbel-max draw: exact, one class per variable
        log_q = log_pi.expand_as(scores).gather(-1, chosen).squeeze(-1).sum(-1)
        one_hot = torch.zeros_like(scores).scatter_(-1, chosen, 1.0)
        if not self.relaxed():
            return one_hot.flatten(-2), log_q
        soft = torch.softmax(scores / self.tau, dim=-1)
        # (soft - soft.detach() is exactly 0: the straight-through code is exactly one-hot)
        z = one_hot + (soft - soft.detach()) if self.straight_through else soft
        return z.flatten(-2), log_q

    def mean(self, h: Params) -> torch.Tensor:
        """The most likely code: each variable's most likely class, one-hot (the mode; the decoder is
        shown codes of the discrete model, not their average softmax(logits))."""
        log_pi = self.log_probs(h)
        return torch.zeros_like(log_pi).scatter_(-1, log_pi.argmax(-1, keepdim=True), 1.0).flatten(-2)

    def kl(self, h: Params, prior: nn.Module) -> torch.Tensor | None:
        if not getattr(prior, "categorical", False):
            return None
        log_pi = self.log_probs(h)
        per_variable = (log_pi.exp() * (log_pi + math.log(self.classes))).sum(-1)  # (N, variables)
        return (per_variable / self.classes).repeat_interleave(self.classes, dim=-1)


@POSTERIORS.register("gaussian")
def build_gaussian(cfg: object, latent_dim: int) -> Posterior:
    return GaussianPosterior()


@POSTERIORS.register("iaf")
def build_iaf(cfg: object, latent_dim: int) -> Posterior:
    return IafPosterior(latent_dim, cfg.steps, cfg.hidden)


@POSTERIORS.register("categorical")
def build_categorical(cfg: object, latent_dim: int) -> Posterior:
    return CategoricalPosterior(
        latent_dim, cfg.classes, cfg.tau, cfg.tau_min, cfg.anneal_rate, cfg.straight_through
    )
