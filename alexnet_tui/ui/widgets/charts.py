"""Live charts (Textual Sparklines) of the run."""

from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

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
        self.query_one(Label).update(f"{self.caption}: {values[-1]:.4g}  (min {low:.4g}, max {high:.4g}){note}")


class TrainingCharts(Vertical):
    """Running loss and accuracy per batch; train and validation loss and accuracy per epoch."""

    DEFAULT_CSS = "TrainingCharts { height: auto; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="charts")
        self.best: tuple[int, float] | None = None

    def compose(self) -> ComposeResult:
        yield Chart("running loss per batch", "chart-batch-loss")
        yield Chart("running accuracy per batch", "chart-batch-acc")
        yield Chart("learning rate per batch", "chart-batch-lr")
        yield Chart("train loss per epoch", "chart-train-loss")
        yield Chart("val loss per epoch", "chart-val-loss")
        yield Chart("val accuracy per epoch", "chart-val-acc")

    def add_batches(self, rows: list[ev.BatchEnd]) -> None:
        self.query_one("#chart-batch-loss", Chart).extend([row.running_loss for row in rows])
        self.query_one("#chart-batch-acc", Chart).extend([row.running_acc for row in rows])
        self.query_one("#chart-batch-lr", Chart).extend([row.lr for row in rows if row.lr is not None])

    def add_epoch(self, event: ev.EpochEnd) -> None:
        if event.best:
            self.best = (event.epoch, event.val_loss)
        note = f"  best: epoch {self.best[0]} ({self.best[1]:.4f})" if self.best else ""
        self.query_one("#chart-train-loss", Chart).extend([event.train_loss])
        self.query_one("#chart-val-loss", Chart).extend([event.val_loss], note)
        self.query_one("#chart-val-acc", Chart).extend([event.val_acc])
