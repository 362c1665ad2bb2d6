"""Live charts (Textual Sparklines) of the run, and the system panel beside them."""

from __future__ import annotations

import os
import resource
from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

from alexnet_tui.engine import events as ev

BATCH_POINTS = 300  # the batch charts show the newest points; the whole run is in metrics.jsonl


class Chart(Vertical):
    """A caption with the latest value above a sparkline."""

    DEFAULT_CSS = """
    Chart { height: auto; }
    Chart Label { color: $text-muted; }
    Chart Sparkline { height: 2; margin-bottom: 1; }
    """

    def __init__(self, caption: str, chart_id: str) -> None:
        super().__init__(id=chart_id)
        self.caption = caption
        self.values: deque[float] = deque(maxlen=BATCH_POINTS)

    def compose(self) -> ComposeResult:
        yield Label(f"{self.caption}: no data yet")
        yield Sparkline([], summary_function=max)

    def extend(self, values: list[float], note: str = "") -> None:
        if not values:
            return
        self.values.extend(values)
        self.query_one(Sparkline).data = list(self.values)
        low, high = min(self.values), max(self.values)
        self.query_one(Label).update(f"{self.caption}: {values[-1]:.4f}  (min {low:.4f}, max {high:.4f}){note}")


class TrainingCharts(Vertical):
    """Running loss and accuracy per batch; train and validation loss and accuracy per epoch."""

    DEFAULT_CSS = "TrainingCharts { height: auto; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="charts")
        self.best: tuple[int, float] | None = None

    def compose(self) -> ComposeResult:
        yield Chart("running loss per batch", "chart-batch-loss")
        yield Chart("running accuracy per batch", "chart-batch-acc")
        yield Chart("train loss per epoch", "chart-train-loss")
        yield Chart("val loss per epoch", "chart-val-loss")
        yield Chart("val accuracy per epoch", "chart-val-acc")

    def add_batches(self, rows: list[ev.BatchEnd]) -> None:
        self.query_one("#chart-batch-loss", Chart).extend([row.running_loss for row in rows])
        self.query_one("#chart-batch-acc", Chart).extend([row.running_acc for row in rows])

    def add_epoch(self, event: ev.EpochEnd) -> None:
        if event.best:
            self.best = (event.epoch, event.val_loss)
        note = f"  best: epoch {self.best[0]} ({self.best[1]:.4f})" if self.best else ""
        self.query_one("#chart-train-loss", Chart).extend([event.train_loss])
        self.query_one("#chart-val-loss", Chart).extend([event.val_loss], note)
        self.query_one("#chart-val-acc", Chart).extend([event.val_acc])


def process_rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), else its peak."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SystemPanel(Static):
    """Device, memory, throughput and how much of each step waits for data."""

    DEFAULT_CSS = "SystemPanel { height: auto; padding: 0 1; border-top: solid $primary; }"

    def show(self, device: str, images_per_sec: float | None, data_wait_share: float | None) -> None:
        import torch

        lines = [f"device: {device}"]
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device.split()[0]).index or 0
            total = torch.cuda.get_device_properties(index).total_memory / 2**30
            allocated = torch.cuda.memory_allocated(index) / 2**30
            peak = torch.cuda.max_memory_allocated(index) / 2**30
            lines.append(f"GPU memory: {allocated:.2f} GiB allocated, {peak:.2f} peak, {total:.1f} total")
        else:
            lines.append(f"process memory (RSS): {process_rss_mib():.0f} MiB")
        lines.append(f"images/s: {images_per_sec:.1f}" if images_per_sec is not None else "images/s: -")
        if data_wait_share is not None:
            lines.append(f"waiting for data: {data_wait_share:.0%} of each step")
        self.update("\n".join(lines))
