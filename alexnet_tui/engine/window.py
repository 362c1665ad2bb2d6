"""Per-batch figures kept on the device and read back a window at a time, and the epoch's totals."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass

import torch


@dataclass
class BatchFigures:
    """One training batch as read back: mean loss over readable images, hits, readable images,
    images in the batch (all ranks' under DDP)."""

    loss: float
    hits: float
    readable: float
    images: float
    lr: float | None = None  # the learning rate of the step (kept on the host, not read back)


@dataclass
class EpochTotals:
    """The epoch so far; saved in last.pt so a resumed epoch reports what an uninterrupted one would."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0  # training time only: pauses and requested evaluations are not counted

    def add(self, batch: BatchFigures) -> None:
        self.loss_sum += batch.loss * batch.readable
        self.correct += batch.hits
        self.seen += batch.readable

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    def to_list(self) -> list[float]:
        return list(astuple(self))


class MetricWindow:
    """Batches since the last report. Their figures stay on the device and are read back together:
    on CUDA each read-back is a sync that stalls the queue of kernels, so one per window, not per batch."""

    def __init__(self) -> None:
        self._stats: list[torch.Tensor] = []
        self.restart()

    def restart(self) -> None:
        """Start timing afresh (after a report, a pause or an evaluation)."""
        self._stats.clear()
        self._lrs: list[float | None] = []
        self.started = time.perf_counter()
        self.data_wait = 0.0  # seconds this window spent waiting for the loader

    def add(self, stats: torch.Tensor, lr: float | None = None) -> None:
        self._stats.append(stats)
        self._lrs.append(lr)

    def __len__(self) -> int:
        return len(self._stats)

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def read(self) -> tuple[list[BatchFigures], float, float]:
        """The window's batches, its seconds and the share of them spent waiting for data; restarts."""
        values = torch.stack(self._stats).tolist() if self._stats else []
        rows = [BatchFigures(*row, lr=lr) for row, lr in zip(values, self._lrs, strict=True)]
        seconds = self.elapsed()
        wait_share = min(1.0, self.data_wait / seconds)
        self.restart()
        return rows, seconds, wait_share
