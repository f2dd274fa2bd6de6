"""VQ-VAE (van den Oord et al. 2017): a sibling of the VAE that shares its data, likelihoods and conv
architecture, with deterministic discrete codes instead of a prior/posterior pair.

    z_e = encoder(x)                       (N, D, h, w): a grid of D-dimensional vectors
    k_i = argmin_j ||z_e,i - e_j||^2        the nearest of the codebook's K entries e_j, at each position i
    z_q = e_k                               decoded as z_e + sg(z_q - z_e): the straight-through gradient
    loss = -log p(x|z_q) + beta ||z_e - sg(z_q)||^2 (+ ||sg(z_e) - z_q||^2, codebook_update=loss)

With codebook_update=ema (VQ-VAE-2, Razavi et al. 2019; the paper's appendix A.1) the codebook is not
learnt by gradient but follows moving averages of the encodings assigned to it:

    N_j <- gamma N_j + (1 - gamma) n_j,   m_j <- gamma m_j + (1 - gamma) sum_{i: k_i = j} z_e,i,   e_j = m_j / N_j

(N_j Laplace-smoothed, so that an entry left unused keeps a finite value). An entry no encoding chose for
`restart_after` training steps is dead: it is reset to a random encoding of the batch.

q(z_q|x) = 1 is a point mass, so the ELBO's KL is -log p(z_q): log K per code under the uniform prior of
the first stage, -log p(z_q) under the autoregressive code prior (vae_cli/models/code_prior.py) that the
second stage of `vae train` fits to the training set's codes (vae_cli/training/code_prior_stage.py), which
`sample` draws from:  -log p(x) <= -log p(x|z_q) - log p(z_q).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as torch_dist
from torch import nn

from vae_cli.config import ModelConfig
from vae_cli.likelihoods import Likelihood
from vae_cli.models.code_prior import CodePrior
from vae_cli.models.conv import ContiguousOutput, conv_trunk, stride2_layout, transposed_stack
from vae_cli.models.registry import MODELS, activation

#: the Laplace smoothing of the EMA's counts (Sonnet's VectorQuantizerEMA epsilon)
EMA_EPSILON = 1e-5


class VQOutput(NamedTuple):
    """What the VQ-VAE's forward pass gives its objective (objective=vq, vae_cli/objectives.py)."""

    params: torch.Tensor  # the likelihood's parameters for x, decoded from z_q (N, P * C, H, W)
    indices: torch.Tensor  # (N, h * w) each position's codebook entry, raster order
    vq_loss: torch.Tensor  # (N,) beta * commitment (+ the codebook loss), summed over the grid
    commitment: torch.Tensor  # (N,) ||z_e - sg(z_q)||^2 summed over the grid, unweighted
    counts: torch.Tensor  # (K,) how many of the batch's encodings chose each entry
    restarted: torch.Tensor | None  # () dead entries reset in this step; None outside training
    uniform_kl: float  # -log p(z_q) under the uniform prior, L log K: the KL of the first stage


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """For each row of flat (M, D), the index of its nearest codebook row (K, D) in Euclidean distance,
    from ||z||^2 - 2 z.e + ||e||^2 in float32 (reduced precision would misplace near ties)."""
    flat, codebook = flat.float(), codebook.float()
    distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)
    return distances.argmin(1)


def ema_update(
    count: torch.Tensor,
    total: torch.Tensor,
    batch_count: torch.Tensor,
    batch_total: torch.Tensor,
    decay: float,
    eps: float = EMA_EPSILON,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One moving-average step of the codebook: (N, m, e) from N (K,), m (K, D) and the batch's counts
    n (K,) and sums of the encodings assigned to each entry (K, D):

        N <- gamma N + (1 - gamma) n,   m <- gamma m + (1 - gamma) sums,   e = m / N~,
        N~_j = (N_j + eps) / (sum N + K eps) * sum N   (Laplace smoothing)"""
    count = decay * count + (1 - decay) * batch_count
    total = decay * total + (1 - decay) * batch_total
    n = count.sum()
    smoothed = (count + eps) / (n + len(count) * eps) * n
    return count, total, total / smoothed[:, None]


def distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)), p the share of encodings that chose each entry: the number of entries in effective use
    (K when used evenly, 1 when one entry takes every encoding)."""
    p = counts.float() / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


class VectorQuantizer(nn.Module):
    """The codebook of K entries of size D: nearest-code quantisation, the straight-through gradient, the
    codebook's updates (moving averages or its loss) and dead-code restarts."""

    def __init__(
        self, size: int, dim: int, commitment: float, update: str, decay: float, restart_after: int
    ) -> None:
        super().__init__()
        self.size, self.dim, self.commitment = size, dim, commitment
        self.ema, self.decay, self.restart_after = update == "ema", decay, restart_after
        initial = torch.empty(size, dim).uniform_(-1 / size, 1 / size)  # Sonnet's initialisation
        if self.ema:
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_count", torch.ones(size))  # e = m / N holds from the start
            self.register_buffer("ema_total", initial.clone())
        else:
            self.codebook = nn.Parameter(initial)
        self.register_buffer("idle", torch.zeros(size))  # training steps since each entry was last chosen

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(z_q with the straight-through gradient (N, D, h, w), indices (N, h * w), vq_loss (N,),
        commitment (N,), counts (K,), restarted (), None outside training). In training mode the codebook's moving averages
        (codebook_update=ema) and its dead entries are updated after the losses are taken."""
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (N * h * w, D), raster order per example
        indices = nearest_codes(flat.detach(), self.codebook)
        z_q = self.codebook[indices].to(z_e.dtype)  # a gather: the codebook loss's gradient reaches e
        commitment = (flat - z_q.detach()).float().pow(2).reshape(n, -1).sum(1)
        vq_loss = self.commitment * commitment
        if not self.ema:
            vq_loss = vq_loss + (flat.detach() - z_q).float().pow(2).reshape(n, -1).sum(1)
        counts = torch.bincount(indices, minlength=self.size).float()
        restarted = self.update(flat.detach().float(), indices, counts) if self.training else None
        z_st = flat + (z_q - flat).detach()  # forward: z_q; backward: the identity to z_e
        z_st = z_st.reshape(n, h, w, d).permute(0, 3, 1, 2)
        return z_st, indices.view(n, h * w), vq_loss, commitment, counts, restarted

    @torch.no_grad()
    def update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """After a training step's quantisation: the moving averages (over every process of a DDP run)
        and the dead entries' restarts; returns how many entries were restarted."""
        counts = counts.clone()
        if distributed():  # every process's encodings: the same codebook, the same dead entries on each
            torch_dist.all_reduce(counts)
        if self.ema:
            sums = torch.zeros(self.size, self.dim, device=flat.device).index_add_(0, indices, flat)
            if distributed():
                torch_dist.all_reduce(sums)
            count, total, codebook = ema_update(self.ema_count, self.ema_total, counts, sums, self.decay)
            self.ema_count.copy_(count)
            self.ema_total.copy_(total)
            self.codebook.copy_(codebook)
        self.idle.copy_(torch.where(counts > 0, 0.0, self.idle + 1))
        if not self.restart_after:
            return torch.zeros((), device=flat.device)
        return self.restart(flat, self.idle >= self.restart_after)

    @torch.no_grad()
    def restart(self, flat: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """Reset the `dead` entries (K,) bool to encodings of the batch, rows of flat picked at random
        (the training RNG: seeded, and restored on resume)."""
        which = dead.nonzero()[:, 0]
        picked = flat[torch.randint(len(flat), (len(which),), device=flat.device)]
        if len(which) and distributed():  # (the same dead entries on every process: all or none call)
            torch_dist.broadcast(picked, 0)
        self.codebook[which] = picked.to(self.codebook.dtype)
        if self.ema:
            self.ema_total[which] = picked
            self.ema_count[which] = 1.0
        self.idle[which] = 0.0
        return dead.sum().float()


class VQVAE(nn.Module):
    """The VQ-VAE with the public surface of the VAE that the commands use: encode, code, decode,
    reconstruct, sample, prior_codes, likelihood, latent_dim, image_shape (and forward for objective=vq).
    Its code z is z_q flattened, (N, D * h * w), what the decoder reads; `indices` gives the grid."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        quantizer: VectorQuantizer,
        code_prior: CodePrior,
        likelihood: Likelihood,
        grid: tuple[int, int],
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.encoder = encoder  # x -> z_e (N, D, h, w)
        self.quantizer = quantizer
        self.decoder = decoder  # z_q (N, D, h, w) -> the likelihood's parameters (N, P * C, H, W)
        self.code_prior = code_prior  # p(z) over the grid's indices: stage two
        self.likelihood = likelihood
        self.grid = grid
        self.image_shape = image_shape

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return (self.quantizer.dim, *self.grid)

    @property
    def positions(self) -> int:
        """L = h * w, the codes per example."""
        return self.grid[0] * self.grid[1]

    @property
    def latent_dim(self) -> int:
        """The size of `code(x)`: D * h * w."""
        return self.quantizer.dim * self.positions

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e, the encoder's grid (N, D, h, w), before quantisation."""
        return self.encoder(x)

    def indices(self, x: torch.Tensor) -> torch.Tensor:
        """Each position's nearest codebook entry, (N, h * w) long, raster order."""
        z_e = self.encode(x)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        return nearest_codes(flat, self.quantizer.codebook).view(len(x), -1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The codes z_q (N, D * h * w) of index grids (N, h * w)."""
        z_q = self.quantizer.codebook[indices.long()].view(len(indices), *self.grid, -1)
        return z_q.permute(0, 3, 1, 2).flatten(1)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """z_q flattened, (N, D * h * w): the deterministic code that reconstruction and interpolation use."""
        return self.lookup(self.indices(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters from codes z, flattened (N, D * h * w) or a grid (N, D, h, w)."""
        return self.decoder(z.reshape(len(z), *self.code_shape))

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        samples: int = 1,
        densities: bool = False,
    ) -> VQOutput:
        """Encode, quantise (in training: update the codebook), decode. The VAE's `samples` and
        `densities` do not apply: the code is deterministic."""
        z_st, indices, vq_loss, commitment, counts, restarted = self.quantizer(self.encode(x))
        uniform = self.positions * math.log(self.quantizer.size)
        return VQOutput(self.decoder(z_st), indices, vq_loss, commitment, counts, restarted, uniform)

    def at_step(self, step: int) -> None:
        """The training loop's clock: no schedule here."""

    def log_prior(self, indices: torch.Tensor) -> torch.Tensor:
        """log p(z_q) under the code prior, nats per example (N,)."""
        return self.code_prior.log_prob(indices)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images decoded from code grids drawn from the code prior (its logits divided by
        `temperature`), shown as the likelihood's mean."""
        return self.likelihood.mean(self.decode(self.prior_codes(n, temperature, generator)))

    def prior_codes(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n codes z_q (n, D * h * w) of grids drawn from the code prior."""
        return self.lookup(self.code_prior.sample(n, generator, temperature))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean decoded from z_q(x)."""
        return self.likelihood.mean(self.decode(self.code(x)))


def is_vqvae(model: nn.Module) -> bool:
    return isinstance(model, VQVAE)


@MODELS.register("vqvae")
def build_vqvae_parts(
    cfg: ModelConfig, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int
) -> tuple[nn.Module, nn.Module]:
    """The encoder x -> z_e (N, D, h, w): the conv model's stride-2 trunk and a 1x1 conv to D channels; the
    decoder z_q -> the likelihood's parameters: a 1x1 conv back to the trunk's width and the conv model's
    transposed convs (`latent_dim` does not apply: the code grid is sized by the layers and code_dim)."""
    layout = stride2_layout(cfg, image_shape)
    width = layout.widths[-1]
    trunk = conv_trunk(cfg, image_shape, layout)[:-1]  # the feature map, not its flattening
    encoder = nn.Sequential(*trunk, nn.Conv2d(width, cfg.code_dim, 1))
    decoder = ContiguousOutput(
        nn.Conv2d(cfg.code_dim, width, 1),
        activation(cfg.activation),
        *transposed_stack(cfg, layout, out_channels),
    )
    return encoder, decoder


def build_vqvae(
    cfg: ModelConfig,
    image_shape: tuple[int, int, int],
    likelihood: Likelihood,
    encoder: nn.Module,
    decoder: nn.Module,
) -> VQVAE:
    """The VQ-VAE of `cfg` (VqvaeConfig) around the encoder and decoder of `build_vqvae_parts`."""
    grid = stride2_layout(cfg, image_shape).sizes[-1]
    quantizer = VectorQuantizer(
        cfg.codebook_size, cfg.code_dim, cfg.commitment, cfg.codebook_update, cfg.ema_decay, cfg.restart_after
    )
    prior = CodePrior(
        cfg.codebook_size, grid[0] * grid[1], cfg.prior_width, cfg.prior_layers, cfg.prior_heads
    )
    return VQVAE(encoder, decoder, quantizer, prior, likelihood, tuple(grid), tuple(image_shape))
