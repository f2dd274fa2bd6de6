"""FactorVAE's total-correlation estimate (Kim & Mnih 2018, "Disentangling by Factorising"): a
discriminator trained beside the VAE to tell codes z ~ q(z) from codes whose dimensions were shuffled
across the batch, z ~ prod_j q(z_j), and the density-ratio trick that turns its logit into the TC.

    TC(z) = KL(q(z) || prod_j q(z_j)) = E_q(z)[log q(z) / prod_j q(z_j)]
    D*(z) = q(z) / (q(z) + prod_j q(z_j))                    the Bayes-optimal discriminator (equal classes)
    log D*(z) / (1 - D*(z)) = log q(z) / prod_j q(z_j)       so TC ~ the batch mean of the logit l(z)

The discriminator outputs that logit, l(z) = log D(z) / (1 - D(z)), one number per code; its loss is the
cross-entropy of the two classes, half each:

    L_D = -1/2 E_q[log D(z)] - 1/2 E_perm[log(1 - D(z~))] = 1/2 (softplus(-l(z)) + softplus(l(z~)))

Each training step, after the VAE's backward pass, the discriminator takes one Adam step (betas (0.5, 0.9),
as in the paper) on the same batch's codes, detached, against a fresh permutation of them: the paper
draws a second batch for it; the same batch keeps the data path one batch a step, and its permutation is
drawn independently of anything the VAE step saw. Under DDP its gradients are averaged over the ranks
by one all-reduce, so every rank keeps the same discriminator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from vae_cli.training.distributed import Dist

#: Kim & Mnih (2018), appendix: Adam with beta1 = 0.5, beta2 = 0.9 for the discriminator
BETAS = (0.5, 0.9)
#: the slope of the paper's LeakyReLU
LEAK = 0.2


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of z (N, d) shuffled by its own random permutation of the N rows (Kim & Mnih 2018,
    Algorithm 1): the rows are draws from prod_j q(z_j), the product of the batch's marginals. The
    permutations are the argsorts of independent uniforms, one column each."""
    n, d = z.shape
    keys = torch.rand((n, d), generator=generator, device=z.device)
    return torch.gather(z, 0, keys.argsort(dim=0))


class Discriminator(nn.Module):
    """An MLP z (N, d) -> the logit l(z) = log D(z) / (1 - D(z)) (N,): `layers` hidden layers of `hidden`
    units with LeakyReLU(0.2) (the paper's is 6 x 1000 with two softmax outputs, the same classifier)."""

    def __init__(self, latent_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        sizes = [latent_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.LeakyReLU(LEAK)]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def discriminator_loss(real: torch.Tensor, permuted: torch.Tensor) -> torch.Tensor:
    """The two-class cross-entropy, classes weighted equally, from the logits of codes z ~ q(z) (class 1)
    and of permuted codes (class 0): 1/2 (softplus(-l(z)) + softplus(l(z~))), batch means."""
    return 0.5 * (F.softplus(-real).mean() + F.softplus(permuted).mean())


def discriminator_accuracy(real: torch.Tensor, permuted: torch.Tensor) -> torch.Tensor:
    """The share of both classes told right (logit > 0 means z ~ q(z)), each class half of it."""
    return 0.5 * ((real > 0).float().mean() + (permuted <= 0).float().mean())


class TCDiscriminator:
    """The discriminator FactorVAE trains beside the VAE, with its own Adam optimiser: `log_ratio(z)` is
    its estimate of log q(z) / prod_j q(z_j) per code (the objective's TC term), `step(z)` its update on
    one batch of codes. Its weights and optimiser state go into the checkpoints (`state_dict`)."""

    def __init__(self, cfg: Any, latent_dim: int, device: torch.device, dist: Dist, seed: int) -> None:
        # The same initial weights on every rank, drawn without moving the run's own random streams.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = Discriminator(latent_dim, cfg.hidden, cfg.layers)
        self.net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=BETAS)
        self.dist = dist

    def log_ratio(self, z: torch.Tensor) -> torch.Tensor:
        """l(z) (N,): the estimate of log q(z) / prod_j q(z_j) at each code; differentiable in z (the VAE's
        TC gradient). Gradients it leaves on the discriminator's weights are cleared by `step`."""
        return self.net(z)

    def step(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step on codes z (N, d) (detached here) against a permutation of them, in float32;
        returns its loss and accuracy (device scalars, before the step). Non-finite codes (a step that
        train.skip_nonfinite skips) count as zeros, so that they cannot poison the weights: no host sync."""
        z = torch.nan_to_num(z.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
        real, permuted = self.net(torch.cat([z, permute_dims(z)])).split(len(z))
        loss = discriminator_loss(real, permuted)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.average_gradients()
        self.optimizer.step()
        return {"disc_loss": loss.detach(), "disc_accuracy": discriminator_accuracy(real, permuted)}

    def average_gradients(self) -> None:
        """The mean gradient over the ranks (one all-reduce of them all, flattened); nothing in one process."""
        if not self.dist.enabled:
            return
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        flat = self.dist.sum(torch.cat([g.flatten() for g in grads]))
        flat /= self.dist.world_size
        for g, averaged in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(averaged.view_as(g))

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
