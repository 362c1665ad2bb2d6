"""The batch sampler and the data loaders: seeded, resumable mid-epoch, sharded under DDP."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from alexnet_tui.engine.distributed import Ranks
from alexnet_tui.processes import ignore_stop_signals

SINGLE_PROCESS = Ranks()


class EpochBatchSampler(Sampler[list[int]]):
    """A seeded shuffle per epoch that can start part-way through, so a resumed run sees the
    same batches an uninterrupted one would."""

    def __init__(self, size: int, batch_size: int, seed: int, limit: int | None, ranks: Ranks = SINGLE_PROCESS) -> None:
        self.size, self.batch_size, self.seed, self.limit, self.ranks = size, batch_size, seed, limit, ranks
        self.epoch, self.start_batch = 1, 0
        # Under DDP each rank takes every world_size-th image of the shared shuffle, padded by
        # wrapping so that all ranks run the same number of batches (as DistributedSampler does).
        self.per_rank = math.ceil(size / ranks.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def total_batches(self) -> int:
        batches = math.ceil(self.per_rank / self.batch_size)
        return min(batches, self.limit) if self.limit else batches

    def __len__(self) -> int:
        return max(0, self.total_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        if self.ranks.distributed:
            padded = order.repeat(math.ceil(self.per_rank * self.ranks.world_size / self.size))
            order = padded[: self.per_rank * self.ranks.world_size][self.ranks.rank :: self.ranks.world_size]
        for batch in range(self.start_batch, self.total_batches()):
            yield order[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()


def default_workers(in_memory: bool) -> int:
    """No workers where decoding costs nothing; else leave one core to the training thread."""
    return 0 if in_memory else max(1, min(4, (os.cpu_count() or 1) - 1))


def make_loader(
    dataset: Dataset,
    workers: int,
    pin_memory: bool,
    seed: int,
    batch_sampler: Sampler[list[int]] | None = None,
    batch_size: int = 1,
    ranks: Ranks = SINGLE_PROCESS,
) -> DataLoader:
    """Training loaders take the batch sampler; evaluation loaders go in order, sharded under DDP."""
    options: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": pin_memory,
        # Its own generator: a loader seeding its workers from the global RNG would shift the
        # dropout masks of a resumed run away from those of an uninterrupted one.
        "generator": torch.Generator().manual_seed(seed),
    }
    if workers > 0:
        # forkserver, not fork: the TUI process is multithreaded, and fork copies held locks.
        options.update(
            multiprocessing_context="forkserver",
            persistent_workers=True,
            prefetch_factor=4,
            worker_init_fn=ignore_stop_signals,
        )
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    if ranks.distributed:
        dataset = Subset(dataset, range(ranks.rank, len(dataset), ranks.world_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **options)


def shut_down(loader: DataLoader) -> None:
    """Stop a loader's persistent worker processes now rather than at garbage collection."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
