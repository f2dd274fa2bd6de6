"""The ladder VAE (Sønderby et al. 2016): L >= 2 stochastic layers z_1 (bottom) .. z_L (top), generated
top-down and inferred top-down, so that each layer's posterior sees the layers above it.

    generative   p(z_L) (the registered prior)   p(z_i | z_{i+1}) = N(mu_p, sigma_p^2)   p(x | z_1)
    bottom-up    d_1 = f_1(x), d_i = f_i(d_{i-1});  (mu^_i, sigma^_i) = a linear head of d_i
    inference    q(z_L | x) = the registered posterior on (mu^_L, sigma^_L)
                 q(z_i | z_{i+1}, x) = N(mu_q, sigma_q^2), the precision-weighted product of the
                 bottom-up N(mu^_i, sigma^_i^2) and the top-down N(mu_p, sigma_p^2):
                 sigma_q^-2 = sigma^_i^-2 + sigma_p^-2,  mu_q = (mu^_i sigma^_i^-2 + mu_p sigma_p^-2) sigma_q^2

The code is every layer's draw, concatenated bottom first: z = [z_1, .., z_L], D = sum of the sizes.
So the seam the one-layer models use holds unchanged: the encoder gives the bottom-up (mu^, log sigma^2)
of every layer as (N, 2D); the posterior (`LadderPosterior`) draws z with its exact log q(z|x) = log
q(z_L|x) + sum_i log q(z_i|z_{i+1}, x); the prior (`LadderPrior`) scores z by log p(z_L) + sum_i log
p(z_i|z_{i+1}) and samples it top-down; the decoder reads z_1. The KL has no closed form: objectives
and bounds use log q - log p on the draws. The top-down networks belong to the generative model, so
they live in the decoder (`decoder.conditionals`); prior and posterior hold it by reference.

Two forms: `form=mlp`, two dense layers per block (as Burda et al. 2016's two-layer model), and
`form=conv`, whose bottom block is the conv encoder and decoder (model.channels), the layers above dense.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.errors import ConfigError
from vae_cli.models.conv import conv_decoder, conv_trunk, stride2_layout
from vae_cli.models.posteriors import LOG_2PI, Params, Posterior, standard_normal
from vae_cli.models.priors import Prior, diagonal_gaussian_log_prob
from vae_cli.models.registry import MODELS, activation

#: the bottom layer's width when model.hidden_dims is null; each layer above has half the one below's
BOTTOM_WIDTH = 512


class FeatureNorm(nn.BatchNorm1d):
    """Batch normalisation of the last dimension over every leading one: the top-down networks see codes
    of k draws per example, (k, N, d), which nn.BatchNorm1d would read as N channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if self.training and len(rows) == 1:  # a batch of one has no variance: its running statistics
            rows = nn.functional.batch_norm(
                rows, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
            return rows.view(x.shape)
        return super().forward(rows).view(x.shape)


def dense_block(n_in: int, width: int, act: str, norm: bool = False) -> list[nn.Module]:
    """Two dense layers of `width`, each followed by batch normalisation (`norm`) and the activation."""
    layers: list[nn.Module] = []
    for n in (n_in, width):
        layers += [nn.Linear(n, width), *([FeatureNorm(width)] if norm else []), activation(act)]
    return layers


def precision_weighted(
    mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of N(mu_a, sigma_a^2) and N(mu_b, sigma_b^2), renormalised: sigma^-2 = sigma_a^-2 +
    sigma_b^-2 and mu = (mu_a sigma_a^-2 + mu_b sigma_b^-2) sigma^2, written with log-variances and
    sigmoids (each mean's weight is the other's share of the total variance) so that it stays finite."""
    logvar = -torch.logaddexp(-logvar_a, -logvar_b)
    weight_a = torch.sigmoid(logvar_b - logvar_a)
    return weight_a * mu_a + (1 - weight_a) * mu_b, logvar


class BottomUp(nn.Module):
    """x -> [mu^_1 .. mu^_L, log sigma^2_1 .. log sigma^2_L] (N, 2D): every layer's bottom-up Gaussian, in
    the (mu, logvar) halves the one-layer encoders give."""

    def __init__(self, blocks: list[nn.Module], heads: list[nn.Linear], dims: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means, logvars = [], []
        d = x
        for block, head in zip(self.blocks, self.heads, strict=True):
            d = block(d)
            mu, logvar = head(d).chunk(2, dim=1)
            means.append(mu)
            logvars.append(logvar)
        return torch.cat(means + logvars, dim=1)

    def top(self) -> TopLayer:
        return TopLayer(self)


class TopLayer(nn.Module):
    """The encoder's Gaussian of the top layer alone, (N, 2 d_L): what a VampPrior over z_L encodes its
    pseudo-inputs with (the top layer's posterior has no top-down part). Holds the encoder by reference."""

    def __init__(self, encoder: BottomUp) -> None:
        super().__init__()
        object.__setattr__(self, "encoder", encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        top = self.encoder.dims[-1]
        return torch.cat([mu[:, -top:], logvar[:, -top:]], dim=1)


class LadderDecoder(nn.Module):
    """The generative networks: `conditionals[i]` maps z_{i+2} to p(z_{i+1} | z_{i+2})'s (mu, logvar)
    (zero-based: conditionals[0] gives the bottom layer's), and `net` maps z_1 to p(x|z_1)'s parameters.
    Called on a code it decodes the bottom layer."""

    def __init__(self, dims: list[int], conditionals: list[nn.Module], net: nn.Module) -> None:
        super().__init__()
        self.dims = dims
        self.conditionals = nn.ModuleList(conditionals)
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[..., : self.dims[0]])

    def layers(self, z: torch.Tensor) -> list[torch.Tensor]:
        """A code (..., D) split into its layers, bottom first."""
        return list(z.split(self.dims, dim=-1))

    def conditional(self, i: int, above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_i | z_{i+1})'s mean and log-variance (zero-based i < L - 1), float32."""
        mu, logvar = self.conditionals[i](above).float().chunk(2, dim=-1)
        return mu, logvar

    def join(self, prior: Prior, posterior: Posterior) -> tuple[Prior, Posterior]:
        """The hierarchy's prior and posterior over the whole code, with `prior` and `posterior` (the
        registered ones, built for the top layer) at its top."""
        return LadderPrior(prior, self), LadderPosterior(posterior, self)


class LadderPrior(Prior):
    """p(z) = p(z_L) prod_i p(z_i | z_{i+1}) over the concatenated code; sampled top-down."""

    def __init__(self, top: Prior, decoder: LadderDecoder) -> None:
        super().__init__(sum(decoder.dims))
        self.top = top
        object.__setattr__(self, "decoder", decoder)  # its weights once in the state_dict, under decoder.

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        layers = self.decoder.layers(z.float())
        log_p = self.top.log_prob(layers[-1])
        for i in range(len(layers) - 1):
            log_p = log_p + diagonal_gaussian_log_prob(layers[i], *self.decoder.conditional(i, layers[i + 1]))
        return log_p

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """z_L from the top prior, then each layer below from N(mu_p, temperature^2 sigma_p^2)."""
        layers = [self.top.sample(n, generator, temperature).float()]
        for i in reversed(range(len(self.decoder.dims) - 1)):
            mu, logvar = self.decoder.conditional(i, layers[0])
            eps = standard_normal(mu.shape, mu, generator)
            layers.insert(0, mu + temperature * torch.exp(0.5 * logvar) * eps)
        return torch.cat(layers, dim=-1)


class LadderPosterior(Posterior):
    """q(z|x) = q(z_L|x) prod_i q(z_i | z_{i+1}, x), drawn top-down; each lower layer's Gaussian is the
    precision-weighted product of its bottom-up and top-down Gaussians (see the module's docstring)."""

    def __init__(self, top: Posterior, decoder: LadderDecoder) -> None:
        super().__init__()
        self.top = top
        object.__setattr__(self, "decoder", decoder)

    def rsample(
        self, h: Params, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._top_down(h, k, generator)

    def mean(self, h: Params) -> torch.Tensor:
        """Each layer's mean given the means above (the top posterior's own mean code at the top)."""
        return self._top_down(h, None, None)[0]

    def _top_down(
        self, h: Params, k: int | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """k draws (k, N, D) and log q (k, N); or, with k None, the means (N, D) and no density."""
        means = self.decoder.layers(h[0].float())
        logvars = self.decoder.layers(h[1].float())
        if k is None:
            layers, log_q = [self.top.mean((means[-1], logvars[-1])).float()], None
        else:
            z, log_q = self.top.rsample((means[-1], logvars[-1]), k, generator)
            layers = [z.float()]
        for i in reversed(range(len(means) - 1)):
            mu, logvar = precision_weighted(means[i], logvars[i], *self.decoder.conditional(i, layers[0]))
            if k is None:
                layers.insert(0, mu)
                continue
            eps = standard_normal(mu.shape, mu, generator)
            layers.insert(0, mu + torch.exp(0.5 * logvar) * eps)
            log_q = log_q - 0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
        return torch.cat(layers, dim=-1), log_q


def layer_widths(cfg: ModelConfig, dims: list[int]) -> list[int]:
    """One deterministic width per stochastic layer, bottom first (model.hidden_dims, else halving)."""
    if cfg.hidden_dims is None:
        return [max(16, BOTTOM_WIDTH >> i) for i in range(len(dims))]
    widths = list(cfg.hidden_dims)
    if len(widths) != len(dims):
        shown = ",".join(str(max(16, BOTTOM_WIDTH >> i)) for i in range(len(dims)))
        raise ConfigError(
            f"model.hidden_dims has {len(widths)} width(s) for a ladder of {len(dims)} stochastic layers "
            f"(model.layers={list(cfg.layers)} and latent_dim={dims[-1]} on top): give one per layer, "
            f"e.g. model.hidden_dims=[{shown}]"
        )
    return widths


@MODELS.register("ladder")
def build_ladder(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    dims = [*cfg.layers, latent_dim]
    widths = layer_widths(cfg, dims)
    c, h, w = image_shape
    act, norm = cfg.activation, bool(getattr(cfg, "batchnorm", False))
    if cfg.form == "conv":
        layout = stride2_layout(cfg, image_shape)
        bottom = nn.Sequential(*conv_trunk(cfg, image_shape, layout), nn.Linear(layout.flat, widths[0]))
        bottom.append(activation(act))
        net = conv_decoder(cfg, layout, dims[0], out_channels)
    else:
        bottom = nn.Sequential(nn.Flatten(), *dense_block(math.prod(image_shape), widths[0], act, norm))
        net = nn.Sequential(
            *dense_block(dims[0], widths[0], act, norm),
            nn.Linear(widths[0], out_channels * h * w),
            nn.Unflatten(1, (out_channels, h, w)),
        )
    blocks = [bottom] + [
        nn.Sequential(*dense_block(widths[i - 1], widths[i], act, norm)) for i in range(1, len(dims))
    ]
    heads = [nn.Linear(width, 2 * d) for width, d in zip(widths, dims, strict=True)]
    # p(z_i | z_{i+1}) through the width of the layer above (Burda et al.'s p(h1|h2) mirrors q(h2|h1))
    conditionals = [
        nn.Sequential(
            *dense_block(dims[i + 1], widths[i + 1], act, norm), nn.Linear(widths[i + 1], 2 * dims[i])
        )
        for i in range(len(dims) - 1)
    ]
    return BottomUp(blocks, heads, dims), LadderDecoder(dims, conditionals, net)
