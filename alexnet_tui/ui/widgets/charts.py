"""Live charts (Textual Sparklines) of the run, with an earlier run's curves under them to compare."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, Sparkline

from alexnet_tui.engine import events as ev
from alexnet_tui.metrics import read_metrics

BATCH_POINTS = 300  # the batch charts show the newest points; the whole run is in metrics.jsonl


class Chart(Vertical):
    """A caption with the latest value above a sparkline."""

    DEFAULT_CSS = """
    Chart { height: auto; }
    Chart Label { color: $text-muted; width: 1fr; height: 1; }
    Chart Sparkline { height: 2; margin-bottom: 1; }
    """

    def __init__(self, caption: str, chart_id: str) -> None:
        super().__init__(id=chart_id)
        self.caption = caption
        self.values: deque[float] = deque(maxlen=BATCH_POINTS)
        self.note = ""
        self.stale = False  # values arrived that the screen does not show yet

    def compose(self) -> ComposeResult:
        yield Label(f"{self.caption}: no data yet")
        yield Sparkline([], summary_function=max)
        yield Label("", classes="reference")
        yield Sparkline([], summary_function=max, classes="reference")

    def on_mount(self) -> None:
        for widget in self.query(".reference"):
            widget.display = False

    def set_reference(self, run: str, values: list[float]) -> None:
        """An earlier run's curve right under this one's, captioned with its name and figures."""
        caption, line = self.query(".reference").results()
        if values:
            low, high = min(values), max(values)
            caption.update(f"  {run}: {values[-1]:.4g}  (min {low:.4g}, max {high:.4g})")
            line.data = values
        for widget in (caption, line):
            widget.display = bool(values)

    def extend(self, values: list[float], note: str = "") -> None:
        """Keep the values; the screen shows them at the next redraw (only while the tab is shown)."""
        if values:
            self.values.extend(values)
            self.note, self.stale = note, True

    def redraw(self) -> None:
        if not self.stale:
            return
        self.stale = False
        self.query_one(Sparkline).data = list(self.values)
        low, high = min(self.values), max(self.values)
        caption = f"{self.caption}: {self.values[-1]:.4g}  (min {low:.4g}, max {high:.4g}){self.note}"
        self.query_one(Label).update(caption, layout=False)  # one line of fixed height: no layout


class TrainingCharts(Vertical):
    """Running loss and accuracy per batch; train and validation loss and accuracy per epoch."""

    DEFAULT_CSS = "TrainingCharts { height: auto; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="charts")
        self.best: tuple[int, float] | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="compare with an earlier run: RUN_DIR, enter", id="compare-run", compact=True)
        yield Chart("running loss per batch", "chart-batch-loss")
        yield Chart("running accuracy per batch", "chart-batch-acc")
        yield Chart("learning rate per batch", "chart-batch-lr")
        yield Chart("train loss per epoch", "chart-train-loss")
        yield Chart("val loss per epoch", "chart-val-loss")
        yield Chart("val accuracy per epoch", "chart-val-acc")

    def redraw(self) -> None:
        for chart in self.query(Chart).results(Chart):
            chart.redraw()

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

    @on(Input.Submitted, "#compare-run")
    def compare_with(self, message: Input.Submitted) -> None:
        """Each epoch chart gets the earlier run's curve under it (from its metrics.jsonl)."""
        run = Path(message.value.strip()).expanduser()
        try:
            epochs = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "epoch"]
        except OSError as error:
            self.app.notify(f"{run}: no metrics.jsonl to compare with ({error.strerror})", severity="error")
            return
        for chart_id, key in (
            ("chart-train-loss", "train_loss"),
            ("chart-val-loss", "val_loss"),
            ("chart-val-acc", "val_acc"),
        ):
            values = [r[key] for r in epochs if r.get(key) is not None]
            self.query_one(f"#{chart_id}", Chart).set_reference(run.name or str(run), values)
        self.app.set_focus(None)
