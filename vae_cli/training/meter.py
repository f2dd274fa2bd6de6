"""The training loop's running sums, read from the device once per `train.log_every` steps.

Per step, the loss, reconstruction and KL (batch means) are added into a window on the device, weighted
by the batch size, and the first non-finite step is noted there too: nothing waits for the device.
At the end of an interval, one all-reduce (a no-op in one process) gathers every process's window, how
many examples it saw, whether it wants to stop (a signal) and whether it met a non-finite loss, so that
all processes agree on the numbers and on stopping at the same step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vae_cli.training.distributed import Dist


class Interval(NamedTuple):
    """What one interval of steps amounted to, over every process."""

    loss: float  # mean per example, nats
    recon: float
    kl: float
    stop: bool  # some process was asked to stop
    nonfinite: bool  # some process met a non-finite loss
    first_nonfinite_step: int | None  # this process's first non-finite step, if it met one


class IntervalMeter:
    def __init__(self, partial: list[float], device: torch.device, dist: Dist) -> None:
        self.dist, self.device = dist, device
        self.sums = torch.tensor(partial, device=device)  # the epoch's loss, recon, kl sums and count
        self.window = torch.zeros(3, device=device)
        self.seen = 0
        self.first_bad = torch.tensor(-1.0, device=device)  # recorded without a sync

    def record(
        self,
        loss: torch.Tensor,
        recon: torch.Tensor,
        kl: torch.Tensor,
        n: int,
        finite: torch.Tensor,
        step: int,
    ) -> None:
        """Add one step's batch means (weighted by its n examples); no host sync."""
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, float(step), self.first_bad)
        self.window.add_(torch.stack([loss, recon, kl]).detach(), alpha=n)
        self.seen += n

    def close(self, stop_requested: bool) -> Interval:
        """End the interval: one host sync (one all-reduce with several processes)."""
        flags = torch.tensor([float(self.seen), float(stop_requested)], device=self.device)
        totals = self.dist.sum(torch.cat([self.window, flags, (self.first_bad >= 0)[None]]))
        loss, recon, kl, seen, stops, bad = totals.tolist()
        self.sums += totals[:4]
        self.window.zero_()
        self.seen = 0
        first = None
        if bad > 0 and self.first_bad >= 0:  # read only when it matters: one host sync per interval
            first = int(self.first_bad)
        n = max(seen, 1)
        return Interval(loss / n, recon / n, kl / n, stops > 0, bad > 0, first)

    @property
    def partial(self) -> list[float]:
        """The epoch's sums so far, for a mid-epoch checkpoint."""
        return self.sums.tolist()

    def epoch_means(self) -> dict[str, float]:
        loss, recon, kl = (self.sums[:3] / self.sums[3].clamp(min=1)).tolist()
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": recon + kl}
