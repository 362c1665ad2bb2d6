"""DistributedDataParallel under torchrun: one process per device, rank 0 speaks for the job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from alexnet_tui.engine.control import Wants
from alexnet_tui.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_ranks() -> Ranks:
    """What torchrun put in the environment (a plain run is rank 0 of 1)."""
    return Ranks(
        int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    )


def init_distributed(ranks: Ranks, device_name: str) -> torch.device:
    """Join the process group: NCCL with one GPU per local rank, or gloo on CPU. The timeout makes a
    rank that died take the job down instead of leaving the others waiting forever."""
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device_name}: CUDA is not available on this machine; use --device cpu")
    timeout = timedelta(seconds=float(os.environ.get("ALEXNET_TUI_DIST_TIMEOUT_S", 600)))
    if use_cuda:
        if ranks.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {ranks.local_rank} has no GPU ({torch.cuda.device_count()} here); "
                "use --nproc-per-node up to the GPU count"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
        return device
    dist.init_process_group("gloo", timeout=timeout)
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def agree(wants: Wants, ranks: Ranks, device: torch.device) -> Wants:
    """What every rank does at this batch: a stop on any rank (Ctrl+C reaches them all) is
    everyone's; pause and evaluate-now are rank 0's, which alone reads the requests."""
    own = wants if ranks.main else wants & Wants.STOP
    flags = torch.tensor([1.0 if want in own else 0.0 for want in Wants], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    agreed = Wants.NOTHING
    for want, flag in zip(Wants, flags.tolist(), strict=True):
        agreed |= want if flag else Wants.NOTHING
    return agreed


def weights_agree(model: torch.nn.Module, device: torch.device) -> bool:
    """Every rank holds the same weights (DDP keeps them so; checked once at the end)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().view(1).to(device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def rank0_says(answer: T) -> T:
    """Rank 0's answer on every rank (about a file that only rank 0 may be able to see)."""
    shared = [answer]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def broadcast_weights(model: torch.nn.Module) -> None:
    """Rank 0's weights and buffers into every rank's copy of the model, in place (the tensors are on
    the process group's device and contiguous: call before converting to channels_last)."""
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)
