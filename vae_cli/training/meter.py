"""The training loop's running sums, read from the device once per `train.log_every` steps.

Per step, the loss, reconstruction and KL (batch means) are added into a window on the device, weighted
by the batch size, and the first non-finite step is noted there too: nothing waits for the device.
At the end of an interval, one all-reduce (a no-op in one process) gathers every process's window, how
many examples it saw, whether it wants to stop (a signal) and whether it met a non-finite loss, so that
all processes agree on the numbers and on stopping at the same step.

An objective's own terms (`Terms.extras`: TC, MMD, ...) ride along the same way, in a window of their
own, into the same all-reduce: the interval's means come back as `Interval.extras`, logged as
train/<name>. With none (the ELBO), a step records nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    extras: dict[str, float]  # the objective's own terms (Terms.extras), means per example


class IntervalMeter:
    def __init__(self, partial: list[float], device: torch.device, dist: Dist) -> None:
        self.dist, self.device = dist, device
        self.sums = torch.tensor(partial, device=device)  # the epoch's loss, recon, kl sums and count
        self.window = torch.zeros(3, device=device)
        self.seen = 0
        self.first_bad = torch.tensor(-1.0, device=device)  # recorded without a sync
        self.extras: dict[str, torch.Tensor | float] = {}  # the window's sums of the objective's own terms

    def record(
        self,
        loss: torch.Tensor,
        recon: torch.Tensor,
        kl: torch.Tensor,
        n: int,
        finite: torch.Tensor,
        step: int,
        extras: Mapping[str, torch.Tensor | float] | None = None,
    ) -> None:
        """Add one step's batch means (weighted by its n examples), and the objective's own terms; no host
        sync."""
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, float(step), self.first_bad)
        self.window.add_(torch.stack([loss, recon, kl]).detach(), alpha=n)
        self.seen += n
        if extras:
            for name, value in extras.items():
                value = value.detach() * n if isinstance(value, torch.Tensor) else value * n
                self.extras[name] = self.extras.get(name, 0.0) + value

    def close(self, stop_requested: bool) -> Interval:
        """End the interval: one host sync (one all-reduce with several processes)."""
        flags = torch.tensor([float(self.seen), float(stop_requested)], device=self.device)
        names = list(self.extras)
        extras = [torch.as_tensor(self.extras[k], dtype=self.window.dtype, device=self.device) for k in names]
        parts = [self.window, flags, (self.first_bad >= 0)[None], *(t.reshape(1) for t in extras)]
        totals = self.dist.sum(torch.cat(parts))
        loss, recon, kl, seen, stops, bad, *extra_sums = totals.tolist()
        self.sums += totals[:4]
        self.window.zero_()
        self.seen = 0
        self.extras = {}
        first = None
        if bad > 0 and self.first_bad >= 0:  # read only when it matters: one host sync per interval
            first = int(self.first_bad)
        n = max(seen, 1)
        means = {name: total / n for name, total in zip(names, extra_sums, strict=True)}
        return Interval(loss / n, recon / n, kl / n, stops > 0, bad > 0, first, means)

    @property
    def partial(self) -> list[float]:
        """The epoch's sums so far, for a mid-epoch checkpoint."""
        return self.sums.tolist()

    def epoch_means(self) -> dict[str, float]:
        loss, recon, kl = (self.sums[:3] / self.sums[3].clamp(min=1)).tolist()
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": recon + kl}
