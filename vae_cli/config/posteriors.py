"""The `posterior` group: one schema per family of q(z|x) (`vae train posterior=<name>`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig, OmegaConf

from vae_cli.config.fields import GroupBase, check, key, option
from vae_cli.errors import ConfigError

NAME = "the approximate posterior q(z|x), chosen with posterior=<name>"


@dataclass
class PosteriorConfig(GroupBase):
    """The keys every posterior has."""

    group = "posterior"

    name: str = key(MISSING, NAME)


@option("posterior", "gaussian")
@dataclass
class GaussianPosteriorConfig(PosteriorConfig):
    """A diagonal Gaussian N(mu(x), diag(sigma^2(x))), the encoder's output."""

    name: str = key("gaussian", NAME)


@option("posterior", "iaf")
@dataclass
class IafPosteriorConfig(PosteriorConfig):
    """Inverse autoregressive flow (Kingma et al. 2016): the Gaussian's draw passed through `steps`
    autoregressive steps (MADE networks conditioned on the encoder's mu and log sigma^2); log q(z|x) is
    exact, the KL is estimated from the draws."""

    name: str = key("iaf", NAME)
    steps: int = key(2, "the flow's steps", min=1)
    hidden: int = key(128, "the hidden units of each step's autoregressive network", min=1)


@option("posterior", "categorical")
@dataclass
class CategoricalPosteriorConfig(PosteriorConfig):
    """N categorical variables of K = `classes` classes (Jang et al. 2017; Maddison et al. 2017): the code
    is their N one-hot blocks, so latent_dim = N * K (the decoder reads latent_dim values); the encoder's
    first latent_dim outputs are the logits. Trained on Gumbel-softmax draws at a temperature annealed
    from tau to tau_min, with the KL to the uniform prior (prior=uniform) in closed form on the
    categorical; evaluated on one-hot draws (the discrete model's exact bound)."""

    name: str = key("categorical", NAME)
    classes: int = key(
        10,
        "K, the classes of each variable; latent_dim must be a multiple of it (latent_dim / K variables)",
        min=2,
    )
    tau: float = key(1.0, "the Gumbel-softmax temperature at the first step", gt=0)
    tau_min: float = key(0.5, "the temperature the annealing stops at (Jang et al.'s 0.5); at most tau", gt=0)
    anneal_rate: float = key(
        3e-5,
        "r in tau_t = max(tau_min, tau exp(-r t)) at optimisation step t (Jang et al.'s schedule); 0 keeps tau",
        min=0,
    )
    straight_through: bool = key(
        False,
        "training decodes the one-hot argmax of each relaxed draw, with the relaxed draw's gradient (the "
        "straight-through Gumbel-softmax)",
    )


#: the one objective the relaxed draws train with: they have no density for the IWAE's log q - log p
CATEGORICAL_OBJECTIVE = "elbo"


#: the one-line errors of a prior and a posterior that cannot be used together
NEEDS_UNIFORM = (
    "posterior=categorical needs prior=uniform, the uniform categorical prior over its one-hot codes "
    "(prior=standard, mog and vamp are priors of continuous codes): add prior=uniform"
)
UNIFORM_ONLY = (
    "prior=uniform is the uniform categorical prior of posterior=categorical's one-hot codes: use it with "
    "posterior=categorical, or choose a prior of continuous codes (prior=standard, mog or vamp)"
)


def classes_problem(latent_dim: int, classes: int) -> str | None:
    """The rule latent_dim breaks for K = `classes` (it is N * K), or None."""
    if latent_dim % classes == 0:
        return None
    nearest = sorted({max(1, latent_dim // classes) * classes, (latent_dim // classes + 1) * classes})
    return (
        f"must be a multiple of posterior.classes={classes} with posterior=categorical (latent_dim = "
        f"variables x classes), e.g. {' or '.join(f'latent_dim={n}' for n in nearest)}"
    )


def tau_rule(tau: float) -> str:
    return f"must be <= posterior.tau={tau}: the temperature anneals down from tau to tau_min"


def chosen(cfg: DictConfig, group: str) -> str | None:
    """The option of `group` in cfg, None where its section is left MISSING (a check of a partial config)."""
    return None if OmegaConf.is_missing(cfg, group) else cfg[group].name


def validate_posterior(cfg: DictConfig) -> None:
    """The posterior's combinations with the other training keys that no single key's rules refuse."""
    categorical = chosen(cfg, "posterior") == "categorical"
    if categorical != (chosen(cfg, "prior") == "uniform"):
        raise ConfigError(NEEDS_UNIFORM if categorical else UNIFORM_ONLY)
    if not categorical:
        return
    post = cfg.posterior
    if cfg.objective.name != CATEGORICAL_OBJECTIVE:
        raise ConfigError(
            f"objective={cfg.objective.name} does not train posterior=categorical: its Gumbel-softmax draws "
            f"are relaxed and have no categorical log q(z|x) (the KL is the categorical's closed form); use "
            f"objective={CATEGORICAL_OBJECTIVE} (vae evaluate still reports the exact discrete IWAE bound)"
        )
    if cfg.model.name == "ladder":
        raise ConfigError(
            "posterior=categorical serves one-layer models: a ladder estimates its KL from log q - log p of "
            "the draws, which the relaxed Gumbel-softmax draws do not have; use model=mlp, conv or resnet"
        )
    check(post.tau_min <= post.tau, "posterior.tau_min", post.tau_min, tau_rule(post.tau))
    if cfg.latent_dim is not None:
        rule = classes_problem(cfg.latent_dim, post.classes)
        check(rule is None, "latent_dim", cfg.latent_dim, rule or "")


def entries_per_variable(posterior: DictConfig) -> int:
    """The code values per latent variable: K one-hot values for posterior=categorical, else 1 (what the
    automatic latent_dim, a number of variables, is multiplied by)."""
    return posterior.classes if posterior.name == "categorical" else 1
