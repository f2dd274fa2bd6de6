"""Data-parallel training with torch.distributed, as started by `torchrun` (or Slurm via submitit).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for each process; every process runs the same `vae
train`. Each rank trains on its shard of every epoch, gradients are averaged by DistributedDataParallel,
metrics are all-reduced, and only rank 0 writes files. The global batch is `train.batch_size` x world size.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vae_cli.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place across ranks; a no-op in a single process."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on any rank (e.g. one rank got Ctrl-C)."""
        return self._vote(flag, device, dist.ReduceOp.MAX) if self.enabled else flag

    def all(self, flag: bool, device: torch.device) -> bool:
        """True on every rank only if it is true on every rank."""
        return self._vote(flag, device, dist.ReduceOp.MIN) if self.enabled else flag

    @staticmethod
    def _vote(flag: bool, device: torch.device, op: dist.ReduceOp) -> bool:
        t = torch.tensor(float(flag), device=device)
        dist.all_reduce(t, op=op)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def export_submitit_environment() -> None:
    """Under Slurm through submitit (`launcher=slurm` with several tasks), every task runs `vae train`:
    set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the job's environment, as torchrun
    would."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export()


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: torch.device, timeout_s: float) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up: NCCL on GPUs, gloo on CPU. Returns the rank's device."""
    export_submitit_environment()
    if not launched_by_torchrun():
        return Dist(), device
    rank, world = rank_from_env(), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
                f"use torchrun --nproc_per_node={torch.cuda.device_count()} or fewer"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise ConfigError("data-parallel training on MPS is not supported: use device=cpu or CUDA GPUs")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A bounded timeout: a rank that dies makes the others fail with an error, never hang forever.
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(rank, world, local_rank), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
