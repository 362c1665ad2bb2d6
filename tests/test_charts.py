"""The Charts tab's plots, read from what they draw: axes with honest bounds, the x axis spanning the
planned epochs, a compared run in the same plots, and a reset for a second run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.containers import ScrollableContainer
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Input

from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import events as ev
from alexnet_tui.ui.app import AlexNetApp
from alexnet_tui.ui.widgets.charts import PLOT_ROWS, Chart, EpochCanvas, TrainingCharts, epoch_ticks
from tests.fake_trainer import ScriptedTrainer


class Host(App):
    """The charts alone, in a scrolling container as in the app's Charts tab."""

    def compose(self) -> ComposeResult:
        with ScrollableContainer():
            yield TrainingCharts()


def drawn(widget: Widget) -> list[str]:
    """The lines the widget puts on the screen at its laid-out size."""
    return [strip.text for strip in widget.render_lines(Region(0, 0, *widget.size))]


def canvas(app: App, chart: str) -> list[str]:
    return drawn(app.query_one(f"#{chart} EpochCanvas", EpochCanvas))


def legend(app: App, chart: str) -> str:
    return str(app.query_one(f"#{chart} Label").render())


def y_labels(lines: list[str]) -> list[str]:
    return [line.split("┤")[0].strip() for line in lines if "┤" in line]


def x_labels(lines: list[str]) -> list[str]:
    """The tick labels under the axis (the line after the one with the ┬ marks)."""
    axis = next(i for i, line in enumerate(lines) if "┬" in line)
    return lines[axis + 1].split()


def point_rows(lines: list[str]) -> list[int]:
    """Rows (from the top of the plot area) that hold a point of the current run."""
    inside = [line for line in lines if "┤" in line or line.lstrip().startswith("│")]
    return [row for row, line in enumerate(inside) if "•" in line]


def epoch(number: int, epochs: int, val_acc: float, val_loss: float = 0.5, best: bool = False) -> ev.EpochEnd:
    """An epoch whose train figures follow its val figures (the plots draw both)."""
    return ev.EpochEnd(number, epochs, val_loss + 0.1, val_acc, val_loss, val_acc, 40.0, 1.0, best)


def write_run(folder: Path, epochs: int) -> Path:
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w", encoding="utf-8") as file:
        for number in range(1, epochs + 1):
            record = epoch(number, epochs, 0.5 + 0.05 * number, 1.0 - 0.1 * number).to_json()
            file.write(json.dumps(record) + "\n")
    return folder


@pytest.mark.asyncio
async def test_accuracy_spans_0_to_1_so_0967_and_1_are_both_near_the_top():
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        charts = app.query_one(TrainingCharts)
        charts.add_epoch(epoch(1, 2, 0.967))
        charts.add_epoch(epoch(2, 2, 1.0))
        charts.redraw()
        await pilot.pause()
        lines = canvas(app, "chart-acc")
        labels = y_labels(lines)
        assert labels[0] == "1" and labels[-1] == "0"  # fixed bounds, not the values' own min and max
        assert point_rows(lines) and max(point_rows(lines)) <= 1  # both in the top rows, not empty against full
        assert "val 1.0000" in legend(app, "chart-acc") and "train 1.0000" in legend(app, "chart-acc")


@pytest.mark.asyncio
async def test_the_x_axis_spans_the_planned_epochs_and_loss_starts_at_0():
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        charts = app.query_one(TrainingCharts)
        # before any epoch ends, the first batches already say how long the run will be
        charts.add_batches([ev.BatchEnd(1, 10, 1, 6, 1.0, 0.5, 1.0, 0.5, 40.0, lr=1e-4)])
        charts.redraw()
        await pilot.pause()
        assert x_labels(canvas(app, "chart-loss"))[-1] == "10"
        assert "no epochs yet" in legend(app, "chart-loss")
        charts.add_epoch(epoch(1, 10, 0.6, val_loss=0.8))
        charts.redraw()
        await pilot.pause()
        lines = canvas(app, "chart-loss")
        assert x_labels(lines)[0] == "0" and x_labels(lines)[-1] == "10"
        assert y_labels(lines)[-1] == "0"  # loss from 0: 0.8 against 0.9 is not empty against full
        columns = [line.index("•") for line in lines if "•" in line]
        width = len(lines[0])
        assert columns and max(columns) < width * 0.2  # one epoch of ten sits at a tenth, it does not fill the width
        assert "best" not in legend(app, "chart-loss")
        charts.add_epoch(epoch(2, 10, 0.7, val_loss=0.7, best=True))
        charts.redraw()
        await pilot.pause()
        assert "best: epoch 2 (0.7000)" in legend(app, "chart-loss")


@pytest.mark.asyncio
async def test_a_compared_run_is_drawn_in_the_same_plots_on_the_same_axes(tmp_path):
    earlier = write_run(tmp_path / "earlier-run", epochs=5)
    app = Host()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        charts = app.query_one(TrainingCharts)
        charts.add_epoch(epoch(1, 3, 0.6))
        charts.redraw()
        field = app.query_one("#compare-run", Input)
        field.value = str(earlier)
        field.focus()
        await pilot.press("enter")
        await pilot.pause()
        for chart in ("chart-loss", "chart-acc"):
            assert "earlier-run" in legend(app, chart)
            lines = canvas(app, chart)
            drawn_text = "\n".join(lines)
            assert "•" in drawn_text and "·" in drawn_text  # this run's points and the earlier run's dotted line
            assert x_labels(lines)[-1] == "5"  # the axis spans the longer of the two runs
        assert y_labels(canvas(app, "chart-acc"))[0] == "1"
        field.value = ""  # an empty field stops comparing
        field.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert "earlier-run" not in legend(app, "chart-loss")
        assert "·" not in "\n".join(canvas(app, "chart-loss"))
        assert x_labels(canvas(app, "chart-loss"))[-1] == "3"
        field.value = str(tmp_path / "nowhere")
        field.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert any("no metrics.jsonl" in n.message for n in app._notifications)


@pytest.mark.asyncio
async def test_reset_clears_the_current_run_and_keeps_the_compared_one(tmp_path):
    earlier = write_run(tmp_path / "earlier-run", epochs=2)
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        charts = app.query_one(TrainingCharts)
        charts.add_batches([ev.BatchEnd(1, 4, 1, 6, 1.0, 0.5, 1.0, 0.5, 40.0, lr=1e-4)])
        charts.add_epoch(ev.EpochEnd(1, 4, 0.9, 0.6, 0.8, 0.7, 40.0, 1.0, True))
        app.query_one("#compare-run", Input).value = str(earlier)
        await app.query_one("#compare-run", Input).action_submit()
        await pilot.pause()
        assert "best: epoch 1" in legend(app, "chart-loss")
        charts.reset()
        charts.redraw()
        await pilot.pause()
        assert charts.best is None
        for chart in ("chart-loss", "chart-acc"):
            assert "no epochs yet" in legend(app, chart) and "best" not in legend(app, chart)
            assert "earlier-run" in legend(app, chart)  # what the field names is still compared
            lines = canvas(app, chart)
            assert "•" not in "\n".join(lines) and x_labels(lines)[-1] == "2"  # the span was this run's
        batch = app.query_one("#chart-batch-loss", Chart)
        assert not batch.values and "no data yet" in str(batch.query_one("Label").render())


@pytest.mark.asyncio
async def test_nothing_is_drawn_until_redraw_and_a_diverged_epoch_is_left_out():
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        charts = app.query_one(TrainingCharts)
        charts.add_epoch(ev.EpochEnd(1, 2, math.nan, 0.5, math.inf, 0.5, 40.0, 1.0, False))
        await pilot.pause()
        assert "•" not in "\n".join(canvas(app, "chart-acc"))  # the app redraws only while the tab is shown
        charts.redraw()
        await pilot.pause()
        assert point_rows(canvas(app, "chart-acc"))
        assert "•" not in "\n".join(canvas(app, "chart-loss"))  # nan and inf have no place on an axis
        assert y_labels(canvas(app, "chart-loss"))[-1] == "0"  # the axes are drawn all the same


@pytest.mark.asyncio
async def test_at_80x24_the_charts_tab_scrolls_rather_than_squashing_the_plots():
    app = AlexNetApp(TrainConfig(data="demo", epochs=2), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.3)
        for plot in app.query(EpochCanvas).results(EpochCanvas):
            assert plot.size.height == PLOT_ROWS
        container = app.query_one("#charts-tab ScrollableContainer", ScrollableContainer)
        assert container.max_scroll_y > 0


def test_epoch_ticks_fit_the_width_and_end_at_the_span():
    assert epoch_ticks(1, 76) == [0, 1]
    assert epoch_ticks(10, 76) == list(range(11))
    assert epoch_ticks(90, 76) == list(range(0, 91, 10))
    assert epoch_ticks(37, 76)[-1] == 37 and len(epoch_ticks(37, 76)) <= 12
