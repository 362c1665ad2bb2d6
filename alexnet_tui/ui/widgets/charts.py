"""The Charts tab: per-epoch plots with axes (plotext), per-batch sparklines, and an earlier run to compare.

The epoch plots are the run's story, so they are honest about scale: accuracy always spans 0..1, loss
starts at 0, and the x axis spans the run's planned epochs (one epoch done of ten sits at a tenth of the
width, not across all of it). A compared run is drawn in the same plots, on the same axes, as dotted
lines. The per-batch curves stay sparklines: they are for watching the run move, and their captions say
the figures.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import RenderableType
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, Sparkline
from textual_plotext import PlotextPlot

from alexnet_tui.engine import events as ev
from alexnet_tui.metrics import read_metrics

BATCH_POINTS = 300  # the batch charts show the newest points; the whole run is in metrics.jsonl
PLOT_ROWS = 12  # fixed: the tab scrolls at 80x24 rather than squashing the plots to nothing
Color = tuple[int, int, int]
# Mid-tone colours that read on dark and light themes; the compared run gets muted ones of the same hue,
# so "train" and "val" keep their colour across runs and the dotted line says which run it is.
CURRENT_COLORS: dict[str, Color] = {"train": (64, 156, 255), "val": (255, 140, 0)}
REFERENCE_COLORS: dict[str, Color] = {"train": (120, 145, 185), "val": (195, 145, 95)}
NICE_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
K = TypeVar("K")


def finite(points: Iterable[tuple[K, float | None]]) -> dict[K, float]:
    """Epoch (or series) -> value, without the None/inf/nan a diverged run writes (plotext cannot place them)."""
    return {epoch: value for epoch, value in points if value is not None and math.isfinite(value)}


def epoch_ticks(last: int, width: int) -> list[int]:
    """Whole epochs from 0 to `last`, as many as fit the width, always ending at `last` (the span)."""
    room = max(2, (width - 6) // (len(str(last)) + 3))
    step = next((s for s in NICE_STEPS if last / s <= room), NICE_STEPS[-1])
    ticks = list(range(0, last + 1, step))
    if ticks[-1] != last:
        # the last tick names the span; a tick too near it would run into its label
        ticks = ticks[:-1] if last - ticks[-1] <= step / 2 and len(ticks) > 1 else ticks
        ticks.append(last)
    return ticks


def loss_ticks(top: float) -> list[float]:
    """Round values from 0 up to `top`, three to five of them (0, 0.2, 0.4, 0.6, 0.8 for 0.95)."""
    power = 10.0 ** math.floor(math.log10(top / 4))
    step = next(s * power for s in (1, 2, 2.5, 5, 10) if top / (s * power) <= 5)
    return [round(i * step, 10) for i in range(int(top / step) + 1)]


@dataclass
class Line:
    """One series in an epoch plot: the current run's (solid, with points) or the compared run's (dotted)."""

    key: str  # "train" or "val"
    points: dict[int, float] = field(default_factory=dict)
    reference: bool = False

    @property
    def color(self) -> Color:
        return (REFERENCE_COLORS if self.reference else CURRENT_COLORS)[self.key]

    @property
    def style(self) -> str:
        """The same colour for the legend (a Rich style string takes no spaces)."""
        return "rgb({},{},{})".format(*self.color)


class EpochCanvas(PlotextPlot):
    """The plot itself. It is laid out on every render, so a resized tab gets ticks that fit its width."""

    DEFAULT_CSS = f"EpochCanvas {{ height: {PLOT_ROWS}; width: 1fr; }}"

    def __init__(self, accuracy: bool) -> None:
        super().__init__()
        self.accuracy = accuracy
        self.lines: list[Line] = []
        self.last_epoch = 1  # the x axis ends here: the planned epochs, or the longest run drawn

    def render(self) -> RenderableType:
        plt = self.plt
        plt.clear_figure()  # every render starts clean: what is drawn is exactly self.lines
        drawn = False
        for line in self.lines:
            if not line.points:
                continue
            xs, ys = list(line.points), list(line.points.values())
            if line.reference:
                plt.plot(xs, ys, marker="·", color=line.color)
            else:
                plt.plot(xs, ys, marker="braille", color=line.color)
                plt.scatter(xs, ys, marker="•", color=line.color)  # a lone epoch is a dot, not a speck
            drawn = True
        if not drawn:
            plt.plot([0], [0], marker=" ")  # nothing yet: an invisible point so the axes are drawn anyway
        plt.xlim(0, self.last_epoch)
        plt.xticks(epoch_ticks(self.last_epoch, self.size.width or 80))
        top = 1.0 if self.accuracy else self.loss_top()
        plt.ylim(0, top)
        # explicit ticks: plotext's own skip values at this height (1.00, 0.83, 0.67, 0.33)
        ticks = [i / 4 for i in range(5)] if self.accuracy else loss_ticks(top)
        plt.yticks(ticks, [f"{tick:g}" for tick in ticks])
        plt.xlabel("epoch")
        return super().render()

    def loss_top(self) -> float:
        """The loss axis runs from 0 to a little above the highest loss drawn (1 with nothing drawn)."""
        values = [value for line in self.lines for value in line.points.values()]
        return max(values) * 1.05 if values and max(values) > 0 else 1.0


class EpochPlot(Vertical):
    """A legend with the latest figures above an EpochCanvas: train and val of this run, and of the
    compared run when there is one. The legend is a line of its own (plotext's sits over the curves)."""

    DEFAULT_CSS = """
    EpochPlot { height: auto; margin-bottom: 1; }
    EpochPlot Label { width: 1fr; height: auto; }
    """

    def __init__(self, caption: str, chart_id: str, accuracy: bool) -> None:
        super().__init__(id=chart_id)
        self.caption, self.accuracy = caption, accuracy
        self.current = {key: Line(key) for key in CURRENT_COLORS}
        self.reference = {key: Line(key, reference=True) for key in REFERENCE_COLORS}
        self.reference_name = ""
        self.planned = 0  # the current run's epochs, from its batches and epochs
        self.note = ""
        self.stale = True  # something changed that the screen does not show yet

    def compose(self) -> ComposeResult:
        yield Label(self.legend())
        yield EpochCanvas(self.accuracy)

    def plan(self, epochs: int) -> None:
        if epochs != self.planned:
            self.planned, self.stale = epochs, True

    def add(self, epoch: int, values: dict[str, float], note: str = "") -> None:
        """By epoch number, so a replayed or resumed epoch replaces its point rather than adding one."""
        for key, value in finite(values.items()).items():
            self.current[key].points[epoch] = value
            self.current[key].points = dict(sorted(self.current[key].points.items()))
        self.note, self.stale = note, True

    def set_reference(self, run: str, values: dict[str, dict[int, float]]) -> None:
        """The earlier run's lines on the same axes; an empty run name drops them."""
        self.reference_name = run
        for key, line in self.reference.items():
            line.points = dict(sorted(values.get(key, {}).items())) if run else {}
        self.stale = True

    def clear(self) -> None:
        """A new run: its own lines, note and span go; the compared run stays (the field still names it)."""
        for line in self.current.values():
            line.points = {}
        self.planned, self.note, self.stale = 0, "", True

    def redraw(self) -> None:
        if not self.stale:
            return
        self.stale = False
        canvas = self.query_one(EpochCanvas)
        lines = [*self.reference.values(), *self.current.values()]  # the current run on top where they cross
        canvas.lines = lines
        canvas.last_epoch = max([self.planned, 1, *(max(line.points, default=0) for line in lines)])
        canvas.refresh()
        self.query_one(Label).update(self.legend())

    def legend(self) -> Text:
        """Each line's colour, name and latest value; the compared run's on a second line, by folder name."""
        text = Text(f"{self.caption}:", style="bold")
        if not any(line.points for line in self.current.values()):
            text.append("  no epochs yet", style="dim")
        for line in self.current.values():
            if line.points:
                text.append(f"  ━• {line.key} ", style=line.style)
                text.append(f"{list(line.points.values())[-1]:.4f}")
        text.append(self.note, style="dim")
        if self.reference_name:
            text.append(f"\n  {self.reference_name}:", style="dim")
            if not any(line.points for line in self.reference.values()):
                text.append("  no epochs to compare", style="dim")
            for line in self.reference.values():
                if line.points:
                    text.append(f"  ┄ {line.key} ", style=line.style)
                    text.append(f"{list(line.points.values())[-1]:.4f}", style="dim")
        return text


class Chart(Vertical):
    """A caption with the latest value, min and max above a sparkline (scaled to its own min and max,
    which is why the caption says them)."""

    DEFAULT_CSS = """
    Chart { height: auto; }
    Chart Label { color: $text-muted; width: 1fr; height: 1; }
    Chart Sparkline { height: 2; margin-bottom: 1; }
    """

    def __init__(self, caption: str, chart_id: str) -> None:
        super().__init__(id=chart_id)
        self.caption = caption
        self.values: deque[float] = deque(maxlen=BATCH_POINTS)
        self.stale = False  # values arrived that the screen does not show yet

    def compose(self) -> ComposeResult:
        yield Label(f"{self.caption}: no data yet")
        yield Sparkline([], summary_function=max)

    def extend(self, values: list[float]) -> None:
        """Keep the values; the screen shows them at the next redraw (only while the tab is shown)."""
        if values:
            self.values.extend(values)
            self.stale = True

    def clear(self) -> None:
        self.values.clear()
        self.stale = True

    def redraw(self) -> None:
        if not self.stale:
            return
        self.stale = False
        self.query_one(Sparkline).data = list(self.values)
        if not self.values:
            self.query_one(Label).update(f"{self.caption}: no data yet", layout=False)
            return
        low, high = min(self.values), max(self.values)
        caption = f"{self.caption}: {self.values[-1]:.4g}  (min {low:.4g}, max {high:.4g})"
        self.query_one(Label).update(caption, layout=False)  # one line of fixed height: no layout


class TrainingCharts(Vertical):
    """Loss and accuracy per epoch as plots with axes; running loss, accuracy and learning rate per batch."""

    DEFAULT_CSS = "TrainingCharts { height: auto; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="charts")
        self.best: tuple[int, float] | None = None

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="compare with an earlier run: RUN_DIR, enter (empty: stop comparing)",
            id="compare-run",
            compact=True,
        )
        yield EpochPlot("loss per epoch", "chart-loss", accuracy=False)
        yield EpochPlot("accuracy per epoch", "chart-acc", accuracy=True)
        yield Chart("running loss per batch", "chart-batch-loss")
        yield Chart("running accuracy per batch", "chart-batch-acc")
        yield Chart("learning rate per batch", "chart-batch-lr")

    def redraw(self) -> None:
        """The app calls this only while the tab is shown, at most twice a second; unchanged parts are skipped."""
        for plot in self.query(EpochPlot).results(EpochPlot):
            plot.redraw()
        for chart in self.query(Chart).results(Chart):
            chart.redraw()

    def reset(self) -> None:
        """Forget the current run (a second run in the same app); the compared run stays drawn."""
        self.best = None
        for plot in self.query(EpochPlot).results(EpochPlot):
            plot.clear()
        for chart in self.query(Chart).results(Chart):
            chart.clear()

    def add_batches(self, rows: list[ev.BatchEnd]) -> None:
        if not rows:
            return
        self.query_one("#chart-batch-loss", Chart).extend([row.running_loss for row in rows])
        self.query_one("#chart-batch-acc", Chart).extend([row.running_acc for row in rows])
        self.query_one("#chart-batch-lr", Chart).extend([row.lr for row in rows if row.lr is not None])
        for plot in self.query(EpochPlot).results(EpochPlot):
            plot.plan(rows[-1].epochs)  # the x axis spans the run from its first batch, before any epoch ends

    def add_epoch(self, event: ev.EpochEnd) -> None:
        if event.best:
            self.best = (event.epoch, event.val_loss)
        note = f"  best: epoch {self.best[0]} ({self.best[1]:.4f})" if self.best else ""
        loss = self.query_one("#chart-loss", EpochPlot)
        accuracy = self.query_one("#chart-acc", EpochPlot)
        loss.add(event.epoch, {"train": event.train_loss, "val": event.val_loss}, note)
        accuracy.add(event.epoch, {"train": event.train_acc, "val": event.val_acc})
        for plot in (loss, accuracy):
            plot.plan(event.epochs)

    @on(Input.Submitted, "#compare-run")
    def compare_with(self, message: Input.Submitted) -> None:
        """The earlier run's curves (from its metrics.jsonl) join both plots, on the same axes."""
        text = message.value.strip()
        run = Path(text).expanduser()
        records: list[dict] = []
        if text:
            try:
                records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "epoch"]
            except OSError as error:
                self.app.notify(f"{run}: no metrics.jsonl to compare with ({error.strerror})", severity="error")
                return
        name = (run.name or str(run)) if text else ""
        for chart_id, prefix in (("chart-loss", "loss"), ("chart-acc", "acc")):
            values = {
                key: finite((r.get("epoch", i + 1), r.get(f"{key}_{prefix}")) for i, r in enumerate(records))
                for key in REFERENCE_COLORS
            }
            self.query_one(f"#{chart_id}", EpochPlot).set_reference(name, values)
        self.app.set_focus(None)
        self.redraw()  # the user asked for it: draw it now, not at the next batch
