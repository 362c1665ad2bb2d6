"""Attaching to a run from elsewhere: runs listing, the STOP file, and the read-only watcher."""

import threading

import pytest
from textual.widgets import DataTable

from alexnet_tui.cli import main
from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Control, RunOutcome, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.ui.app import AlexNetApp
from alexnet_tui.ui.widgets.tables import BatchTable
from tests.conftest import tiny_config
from tests.test_ui import wait_for


def test_runs_lists_state_epochs_and_best(finished_run, capsys):
    assert main(["runs", str(finished_run.parent)]) == 0
    out = capsys.readouterr().out
    assert str(finished_run) in out and "finished" in out and "2/2" in out and "cpu" in out


def test_stop_file_stops_the_engine_gracefully(tmp_path):
    events: list[ev.Event] = []
    trainer = Trainer(tiny_config(tmp_path, epochs=50), [events.append], Control())

    def ask_to_stop(event: ev.Event) -> None:
        if isinstance(event, ev.BatchEnd) and (event.epoch, event.batch) == (1, 2):  # `touch RUN_DIR/STOP`, once
            (tmp_path / "run" / "STOP").touch()

    trainer.subscribe(ask_to_stop)
    assert trainer.fit() is RunOutcome.STOPPED
    stopped = [e for e in events if isinstance(e, ev.Stopped)][0]
    assert "STOP file" in stopped.reason and not (tmp_path / "run" / "STOP").exists()
    assert [e.command for e in events if isinstance(e, ev.ControlAck)] == ["stop"]  # said on every screen
    trainer.close()


@pytest.mark.asyncio
async def test_watch_follows_a_growing_truncated_file_and_asks_to_stop(tmp_path, finished_run):
    lines = (finished_run / "metrics.jsonl").read_text().splitlines(keepends=True)
    run = tmp_path / "followed"
    run.mkdir()
    metrics = run / "metrics.jsonl"
    half = next(i for i, line in enumerate(lines) if '"event":"epoch"' in line) + 1
    metrics.write_text("".join(lines[:half]) + lines[half][:10])  # a torn last line, as mid-write
    app = AlexNetApp(TrainConfig(), attach=run, read_only=True)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        batches = lambda: app.query_one(BatchTable).row_count  # noqa: E731
        epochs = lambda: app.query_one("#epochs", DataTable).row_count  # noqa: E731
        await wait_for(pilot, lambda: epochs() == 1, timeout=20)
        assert batches() == 5 and app.state == "training"
        with metrics.open("a") as file:
            file.write(lines[half][10:] + "".join(lines[half + 1 :]))
        await wait_for(pilot, lambda: app.state == "finished", timeout=20)
        assert batches() == 10 and epochs() == 3  # two epochs and the final test row
        metrics.write_text("".join(lines[:half]))  # truncated, e.g. a new run over it
        await wait_for(pilot, lambda: epochs() == 1 and batches() == 5, timeout=20)
        await pilot.press("s")  # read-only: nothing starts here
        assert app.trainer is None
        await pilot.press("x")
        assert (run / "STOP").exists()
        await pilot.press("q")
    assert app.return_value == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("follow")]


def test_runs_compare_shows_what_differs_and_the_figures(finished_run, tmp_path, monkeypatch, capsys):
    from tests.conftest import TINY_ARGS

    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--lr", "0.001", "--out", "other"]) == 0
    capsys.readouterr()
    assert main(["runs", "--compare", str(finished_run), "other"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["--lr"] == ["0.0001", "0.001"] and rows["--epochs"] == ["2", "1"]
    assert "--seed" not in rows  # the same in both: not shown
    assert rows["state"] == ["finished", "finished"] and len(rows["best"]) == 3  # "val_loss" and two figures
    assert main(["runs", "--compare", "other"]) == 2
