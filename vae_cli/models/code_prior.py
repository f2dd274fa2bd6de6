"""The autoregressive prior over a VQ-VAE's code grid: a small causal transformer (GPT-style).

    p(z) = prod_i p(z_i | z_<i),   z = the grid's codebook indices in raster order (row by row), i = 1..L

Each position reads a start token and the codes before it (learned position embeddings, pre-norm blocks of
causal self-attention and an MLP); its logits over the K codebook entries come from a linear head that
starts at zero, so the untrained prior is the uniform one, log p(z) = -L log K: the prior of the VQ-VAE's
first stage (van den Oord et al. 2017, who fit a PixelCNN in the second; a causal transformer over the
flattened grid is the same model class, simpler to keep causal and fast on a CPU for small grids).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: code grids drawn at a time by `sample`: bounded memory for thousands of samples
SAMPLE_BATCH = 1024


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, t, width = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # position i attends to <= i only
        return self.out(y.transpose(1, 2).reshape(n, t, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(width), CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class CodePrior(nn.Module):
    """p(z) over grids of `positions` codes, each one of `codes` codebook entries."""

    def __init__(self, codes: int, positions: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.codes, self.positions = codes, positions
        self.embed = nn.Embedding(codes + 1, width)  # index `codes` is the start token
        self.position = nn.Parameter(torch.randn(positions, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codes)
        nn.init.zeros_(self.head.weight)  # the untrained prior is uniform over the codes
        nn.init.zeros_(self.head.bias)

    def next_logits(self, prefix: torch.Tensor) -> torch.Tensor:
        """The logits of p(z_i | z_<i) for i = 1..T+1, (N, T + 1, K), from the first T codes (N, T)."""
        start = torch.full((len(prefix), 1), self.codes, dtype=torch.long, device=prefix.device)
        tokens = torch.cat([start, prefix.long()], dim=1)
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The logits of p(z_i | z_<i) at every position of the grids z (N, L): (N, L, K)."""
        return self.next_logits(z[:, :-1])

    def log_prob_per_position(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_i | z_<i), nats, (N, L)."""
        log_p = F.log_softmax(self.logits(z).float(), dim=-1)
        return log_p.gather(-1, z.long()[..., None])[..., 0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = sum_i log p(z_i | z_<i), nats per grid, (N,)."""
        return self.log_prob_per_position(z).sum(-1)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """n grids z ~ p(z) (n, L) long, position by position, each from softmax(logits / temperature)."""
        device = self.position.device
        grids = []
        for size in [SAMPLE_BATCH] * (n // SAMPLE_BATCH) + ([n % SAMPLE_BATCH] if n % SAMPLE_BATCH else []):
            z = torch.empty(size, 0, dtype=torch.long, device=device)
            for _ in range(self.positions):
                probs = F.softmax(self.next_logits(z)[:, -1].float() / temperature, dim=-1)
                z = torch.cat([z, torch.multinomial(probs, 1, generator=generator)], dim=1)
            grids.append(z)
        return torch.cat(grids) if grids else torch.empty(0, self.positions, dtype=torch.long, device=device)

    def is_uniform(self) -> bool:
        """Whether the logits are zero whatever the codes (the untrained prior): p(z) is uniform."""
        return not (self.head.weight.any() or self.head.bias.any())

    def uniform_nll(self) -> float:
        """-log p(z) of the uniform prior, L log K nats: the untrained prior's, for every grid."""
        return self.positions * math.log(self.codes)
