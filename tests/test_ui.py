import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from textual.css.query import NoMatches
from textual.widgets import DataTable, Input, RichLog

from alexnet_tui.config import TrainConfig
from alexnet_tui.ui.app import AlexNetApp
from alexnet_tui.ui.widgets.tables import BatchTable
from tests.conftest import jpeg_bytes, tiny_config
from tests.fake_trainer import PacedTrainer, ScriptedTrainer


async def wait_for(pilot, condition, timeout: float = 120) -> None:
    """Until `condition()` holds, by a deadline: a state or an event, never a fixed pause. A widget not
    there yet (the run screen composes after the app is ready) is not there yet, not a failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except NoMatches:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def rows(app: AlexNetApp, table: str = "#batches") -> int:
    widget = app.query_one(table)
    assert isinstance(widget, BatchTable | DataTable)
    return widget.row_count


@pytest.fixture
def paced():
    return PacedTrainer


@pytest.mark.asyncio
async def test_start_streams_rows_and_finishes_with_checkpoints(tmp_path):
    app = AlexNetApp(tiny_config(tmp_path, epochs=1))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        assert app.state == "idle"
        await pilot.press("s")
        await wait_for(pilot, lambda: rows(app) > 0)
        await wait_for(pilot, lambda: app.state == "finished")
        assert rows(app) == 5
        assert (tmp_path / "run" / "best.pt").exists()
        assert any("Saving Model!" in n.message for n in app._notifications)
        image = tmp_path / "picture.jpg"
        image.write_bytes(jpeg_bytes(90, 70, seed=3))
        await pilot.press("4")
        app.query_one("#predict-path", Input).value = str(image)
        app.query_one("#predict-path", Input).focus()
        await pilot.press("enter")
        results = app.query_one("#predict-results", RichLog)
        await wait_for(pilot, lambda: len(results.lines) > 0, timeout=30)
        text = "".join(segment.text for line in results.lines for segment in line)
        assert text.startswith(f"{image}: ") and "checks" in text and "spots" in text
        assert app.query_one("#predict-picture").image.size == (90, 70)  # the picture beside its classes
        await pilot.press("escape", "q")
    assert app.return_value == 0


@pytest.mark.asyncio
async def test_early_stopping_is_said_and_leaves_a_full_bar_without_an_eta(
    tmp_path, val_loss_never_improves, per_batch_reports
):
    """--patience ends the run at epoch 2 of 6: the log says why, the run bar is full, no ETA is left."""
    app = AlexNetApp(tiny_config(tmp_path, epochs=6, patience=1, limit_batches=2))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("6")  # the Log tab: a RichLog lays its lines out once shown
        await pilot.pause(0.3)
        log = "".join(segment.text for line in app.query_one("#log-view", RichLog).lines for segment in line)
        assert "early stopping: val_loss has not improved for 1 epoch(s)" in log
        assert any(n.title == "Early stopping" for n in app._notifications)  # seen from any tab
        assert app.query_one("#run-progress").percentage == 1.0
        assert str(app.query_one("#eta").content) == ""


@pytest.mark.asyncio
async def test_the_model_tab_follows_the_arch_and_shows_frozen_features_as_non_trainable():
    config = TrainConfig(data="demo", arch="torchvision", weights="alexnet.pth", freeze="features", num_classes=2)
    app = AlexNetApp(config)
    async with app.run_test(size=(100, 30)) as pilot:
        summary = app.query(".summary").first()
        await wait_for(pilot, lambda: "Total params" in str(summary.content), timeout=60)
        text = str(summary.content)
        assert "[-1, 64, 55, 55]" in text and "Non-trainable params: 2,469,696" in text


@pytest.mark.asyncio
async def test_stop_saves_then_start_goes_on_and_evaluate_adds_a_row(tmp_path, paced):
    app = AlexNetApp(tiny_config(tmp_path, epochs=2), trainer_factory=paced)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: rows(app) >= 2)
        await pilot.press("x")
        await wait_for(pilot, lambda: app.state == "stopped")
        assert (tmp_path / "run" / "last.pt").exists()
        stopped_at = rows(app)
        await pilot.press("e")
        await wait_for(pilot, lambda: app.state == "stopped" and rows(app, "#epochs") == 1)
        assert app.query_one("#epochs", DataTable).get_row_at(0)[0] == "eval"
        assert (tmp_path / "run" / "evaluation-val.json").exists()  # with the confusion matrix, in the Log tab too
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        first_after = app.query_one(BatchTable).get_row_at(stopped_at)
        assert first_after[1] == f"{stopped_at + 1}/5"  # resumed at the next batch, not from the start
        await pilot.press("q")


@pytest.mark.asyncio
async def test_pause_stops_new_rows_until_resumed(tmp_path, paced):
    app = AlexNetApp(tiny_config(tmp_path, epochs=1), trainer_factory=paced)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: rows(app) >= 1)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.state == "paused")
        count = rows(app)
        await pilot.pause(1.5)
        assert rows(app) == count
        await pilot.press("p")
        await wait_for(pilot, lambda: app.state == "finished")
        assert rows(app) == 5
        await pilot.press("q")


@pytest.mark.asyncio
async def test_quit_while_training_asks_then_leaves_no_thread(tmp_path, paced):
    before = {t.ident for t in threading.enumerate()}
    app = AlexNetApp(tiny_config(tmp_path, epochs=3), trainer_factory=paced)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: rows(app) >= 1)
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.is_running and app.screen.__class__.__name__ == "ConfirmQuit"
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, timeout=60)
    await asyncio.sleep(0.5)
    # asyncio_N are the event loop's own executor threads, not the engine's.
    left = [t.name for t in threading.enumerate() if t.ident not in before and not t.name.startswith("asyncio_")]
    assert left == []
    assert (tmp_path / "run" / "last.pt").exists()


@pytest.mark.asyncio
async def test_bad_settings_are_refused_in_the_form(tmp_path):
    app = AlexNetApp(tiny_config(tmp_path))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.query_one("#field-epochs", Input).value = "0"
        await pilot.press("s")
        await wait_for(pilot, lambda: any("--epochs must be a positive" in n.message for n in app._notifications))
        assert app.state == "idle"
        app.query_one("#field-epochs", Input).value = "1"
        app.query_one("#field-data", Input).value = str(tmp_path / "missing")
        await pilot.press("s")
        await wait_for(pilot, lambda: any("no such folder" in n.message for n in app._notifications))
        assert app.state == "idle"


@pytest.mark.asyncio
async def test_engine_exception_is_shown_and_a_second_start_works(tmp_path):
    class Flaky(ScriptedTrainer):
        calls = 0

        def fit(self):
            Flaky.calls += 1
            self.fail_with = RuntimeError("disk on fire") if Flaky.calls == 1 else None
            return super().fit()

    app = AlexNetApp(TrainConfig(data="demo"), trainer_factory=Flaky)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "failed")
        await wait_for(pilot, lambda: any("disk on fire" in n.message for n in app._notifications))
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")


def scripted_app(hold_at=None) -> AlexNetApp:
    class Scripted(ScriptedTrainer):
        pass

    Scripted.hold_at = hold_at
    return AlexNetApp(TrainConfig(data="demo", epochs=2), trainer_factory=Scripted)


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.3)


async def summary_ready(pilot) -> None:
    await wait_for(pilot, lambda: "Conv2d-1" in str(pilot.app.query_one(".summary").render()))
    await pilot.pause(0.2)


def test_snapshot_idle_with_summary(snap_compare):
    assert snap_compare(scripted_app(), terminal_size=(100, 30), run_before=summary_ready)


def test_snapshot_idle_80x24(snap_compare):
    assert snap_compare(scripted_app(), terminal_size=(80, 24), run_before=summary_ready)


def test_snapshot_training(snap_compare):
    async def run_before(pilot):
        await pilot.press("s")
        await wait_for(pilot, lambda: rows(pilot.app) == 10)
        await pilot.pause(0.3)

    assert snap_compare(scripted_app(hold_at=(2, 4)), terminal_size=(100, 30), run_before=run_before)


def test_snapshot_finished(snap_compare):
    async def run_before(pilot):
        await pilot.press("s")
        await settle(pilot)
        await wait_for(pilot, lambda: pilot.app.state == "finished")
        await pilot.pause(0.5)

    assert snap_compare(scripted_app(), terminal_size=(80, 24), run_before=run_before)


def test_tcss_is_shipped():
    assert (Path(__file__).parents[1] / "alexnet_tui" / "ui" / "app.tcss").exists()


@pytest.mark.asyncio
async def test_charts_and_system_panel_follow_the_run():
    from alexnet_tui.ui.widgets.charts import Chart, EpochPlot
    from alexnet_tui.ui.widgets.system import SystemPanel

    app = scripted_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("3")
        await pilot.pause(1.2)
        assert len(app.query_one("#chart-batch-loss", Chart).values) == 12
        assert list(app.query_one("#chart-batch-lr", Chart).values) == [1e-4] * 12  # the learning rate too
        assert app.query_one(BatchTable).get_row_at(0)[-1] == "1.00e-04"
        assert list(app.query_one("#chart-loss", EpochPlot).current["val"].points.values()) == pytest.approx([0.8, 0.6])
        assert "best: epoch 2" in str(app.query_one("#chart-loss Label").render())
        system = str(app.query_one(SystemPanel).render())
        assert "trainer: pid 4242 on gpu-box" in system and "images/s: 40.0" in system
        assert "trainer memory (RSS): 2150 MiB, CPU 180% of a core" in system  # its figures, not the viewer's
        assert "CPU per core:" in system and "compute-bound" in system  # the scripted run never waits for data


@pytest.mark.asyncio
async def test_the_charts_tab_draws_what_came_after_its_last_redraw(monkeypatch):
    """Drains redraw the shown charts at most every CHARTS_REDRAW_S: what came after (a run that
    paused or ended right after a redraw) is drawn by the once-a-second panel update."""
    from alexnet_tui.engine import events as ev

    monkeypatch.setattr("alexnet_tui.ui.run_screen.CHARTS_REDRAW_S", 3600.0)
    app = scripted_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("3")
        await wait_for(pilot, lambda: "best: epoch 2" in str(app.query_one("#chart-loss Label").render()))
        app.run_screen.pending.append(ev.EpochEnd(3, 3, 0.5, 0.9, 0.25, 0.95, 40.0, 12.0, True))
        await wait_for(pilot, lambda: "best: epoch 3" in str(app.query_one("#chart-loss Label").render()), 3)


@pytest.mark.asyncio
async def test_the_batch_table_follows_the_newest_row_until_the_user_scrolls_up():
    from textual.app import App

    from alexnet_tui.engine import events as ev
    from alexnet_tui.ui.widgets import tables

    def batches(first: int, count: int) -> list[ev.BatchEnd]:
        return [ev.BatchEnd(1, 1, n, 999, 0.5, 0.5, 0.5, 0.5, 10.0) for n in range(first, first + count)]

    def bottom(table: BatchTable) -> str:
        return table.render_line(table.scrollable_content_region.height - 1).text.split()[1]

    class TableApp(App):
        def compose(self):
            yield BatchTable()

    async with TableApp().run_test(size=(80, 12)) as pilot:
        table = pilot.app.query_one(BatchTable)
        table.add_batches(batches(1, 50))
        await pilot.pause()
        assert bottom(table) == "50/999" and table.render_line(0).text.split()[:2] == ["epoch", "batch"]
        table.focus()
        await pilot.press("pageup")  # the user reads back: new rows do not pull the view down
        table.add_batches(batches(51, 10))
        await pilot.pause()
        assert table.scroll_y < table.max_scroll_y and bottom(table) != "60/999"
        await pilot.press("end")  # back at the end: it follows again
        table.add_batches(batches(61, 300))
        await pilot.pause()
        assert bottom(table) == "360/999" and table.row_count == tables.MAX_BATCH_ROWS
        assert table.get_row_at(0)[1] == f"{361 - tables.MAX_BATCH_ROWS}/999"
        await pilot.press("pageup")
        top = table.render_line(1).text
        table.add_batches(batches(361, 20))  # full: older rows leave, the rows being read stay put
        await pilot.pause()
        assert table.render_line(1).text == top and table.get_row_at(0)[1] == f"{381 - tables.MAX_BATCH_ROWS}/999"
    assert tables.rate_text(12345.6) == "12346" and tables.rate_text(37.94) == "37.9"  # six characters


@pytest.mark.asyncio
async def test_folder_data_with_loader_workers_trains_in_the_app(tmp_path, pet_folder):
    app = AlexNetApp(tiny_config(tmp_path, data=str(pet_folder), epochs=1, batch_size=4, workers=1))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state in ("finished", "failed"))
        assert app.state == "finished", [n.message for n in app._notifications]
        await pilot.press("q")


@pytest.mark.asyncio
async def test_the_command_palette_lists_the_keys_and_runs_them():
    from textual.command import CommandPalette

    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert {"Start", "Quit", "Help", "Show the Charts tab"} <= set(titles)
        assert "Stop" not in titles and "Pause/Resume" not in titles  # greyed out while idle
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Start", "enter")
        await wait_for(pilot, lambda: app.state == "finished")


def test_the_panel_says_where_a_step_waits():
    from alexnet_tui.ui.widgets.system import verdict

    assert verdict(0.5).startswith("data-bound: raise --workers")
    assert verdict(0.02).startswith("compute-bound") and verdict(0.2) is None and verdict(None) is None


@pytest.mark.asyncio
async def test_the_report_tab_shows_the_confusion_and_the_mistakes_with_their_pictures(tmp_path, pet_folder):
    app = AlexNetApp(tiny_config(tmp_path, data=str(pet_folder), epochs=1, batch_size=4))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("e")
        confusion = app.query_one("#confusion", DataTable)
        await wait_for(pilot, lambda: confusion.row_count == 2)
        await pilot.press("5")
        report = json.loads((tmp_path / "run" / "evaluation-val.json").read_text())
        cells = [[str(cell) for cell in confusion.get_row_at(row)[1:]] for row in range(2)]
        assert cells == [[str(count) for count in row] for row in report["confusion_matrix"]]
        mistakes = app.query_one("#mistakes", DataTable)
        assert mistakes.row_count == len(report["most_confident_mistakes"])
        if mistakes.row_count:
            picture = app.query_one("#mistake-picture")
            assert str(picture.image) == report["most_confident_mistakes"][0]["image"]
        await pilot.press("q")


def test_a_long_image_name_keeps_its_end_in_the_mistakes_table():
    """Photos in one folder share a prefix (quoctrung163__train_cat.185.jpg): the start is cut."""
    from alexnet_tui.ui.widgets.report import IMAGE_NAME_CELLS, name_tail

    assert name_tail("12.jpg") == "12.jpg"
    cut = name_tail("quoctrung163__train_cat.185.jpg")
    assert cut.startswith("…") and cut.endswith("cat.185.jpg") and len(cut) == IMAGE_NAME_CELLS


@pytest.mark.asyncio
async def test_the_charts_draw_an_earlier_run_in_the_same_plots(finished_run):
    from alexnet_tui.metrics import read_metrics
    from alexnet_tui.ui.widgets.charts import EpochPlot

    app = scripted_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("3")
        field = app.query_one("#compare-run", Input)
        field.value = str(finished_run)
        field.focus()
        await pilot.press("enter")
        earlier = [r["val_loss"] for r in read_metrics(finished_run / "metrics.jsonl") if r["event"] == "epoch"]
        plot = app.query_one("#chart-loss", EpochPlot)
        await wait_for(pilot, lambda: finished_run.name in str(plot.query_one("Label").render()))
        assert list(plot.reference["val"].points.values()) == earlier
        assert list(plot.current["val"].points.values()) == pytest.approx([0.8, 0.6])  # the current run's stays
        field.value = "/nowhere"
        field.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("no metrics.jsonl" in n.message for n in app._notifications))


@pytest.mark.asyncio
async def test_a_new_best_checkpoint_toast_replaces_the_last_one():
    """Demo epochs take seconds: each epoch's toast stacked over the tables until the run ended."""
    app = scripted_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        best = [toast.message for toast in app._notifications if toast.title == "New best checkpoint"]
        assert len(best) == 1 and "0.60000" in best[0]  # epoch 2's, the newer of the two bests


@pytest.mark.asyncio
async def test_resume_shows_the_run_so_far_before_it_goes_on(finished_run, tmp_path):
    """--resume in the TUI said "run: not started", then drew only the epochs trained from then on."""
    config = tiny_config(tmp_path, out=None, resume=str(finished_run), epochs=3)
    app = AlexNetApp(config, trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await wait_for(
            pilot, lambda: app.query_one("#epochs", DataTable).row_count >= 2 and not app.run_screen.catching_up
        )
        status = str(app.query_one("#status").render())
        assert "FINISHED" in status and str(finished_run) in status and "not started" not in status
        assert not app._notifications  # the history's best checkpoints are not news
        await pilot.press("q")
