"""Attaching to a run another process is running: request files, acknowledgements, the attached screen."""

import json
import threading
import time

import pytest
from textual.widgets import DataTable

from alexnet_tui.cli import main
from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Control, RunOutcome, RunState
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.follow import MetricsFollower
from alexnet_tui.engine.remote import RemoteControl, newest_live_run, run_is_live
from alexnet_tui.errors import UsageError
from alexnet_tui.metrics import MetricsWriter
from alexnet_tui.ui.app import AlexNetApp
from alexnet_tui.ui.widgets.tables import BatchTable
from tests.conftest import tiny_config
from tests.test_ui import PacedTrainer, wait_for


class LiveRun:
    """A run training in a thread of this process, as another process's would: its own Control,
    metrics.jsonl on disk, the run directory locked."""

    def __init__(self, tmp_path, epochs: int = 200) -> None:
        self.events: list[ev.Event] = []
        self.trainer = PacedTrainer(tiny_config(tmp_path, epochs=epochs), [self.events.append], Control())
        self.trainer.prepare()
        self.path = self.trainer.position().run_dir
        self.metrics = MetricsWriter(self.path / "metrics.jsonl")
        self.trainer.subscribe(self.metrics)
        self.outcome: RunOutcome | None = None
        self.thread = threading.Thread(target=self.fit)
        self.thread.start()

    def fit(self) -> None:
        self.outcome = self.trainer.fit()

    def states(self) -> list[str]:
        return [e.state for e in self.events if isinstance(e, ev.StateChanged)]

    def wait(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def end(self) -> None:
        self.trainer.control.request_stop("test over")
        self.thread.join(60)
        self.trainer.close()
        self.metrics.close()


@pytest.fixture
def live_run(tmp_path, monkeypatch):
    monkeypatch.setattr("alexnet_tui.engine.trainer.REPORT_INTERVAL_S", 0.0)
    run = LiveRun(tmp_path)
    yield run
    run.end()


def test_requests_from_another_process_pause_evaluate_resume_and_stop(live_run):
    remote = RemoteControl(live_run.path)
    live_run.wait(lambda: any(isinstance(e, ev.BatchEnd) for e in live_run.events), "training")
    assert run_is_live(live_run.path) and newest_live_run(live_run.path.parent) == live_run.path
    remote.pause()
    live_run.wait(lambda: RunState.PAUSED in live_run.states(), "the pause")
    remote.request_evaluation()
    live_run.wait(lambda: any(isinstance(e, ev.EvaluationEnd) and e.requested for e in live_run.events), "the report")
    assert (live_run.path / "evaluation-val.json").exists()
    remote.resume()
    live_run.wait(lambda: live_run.states()[-1] == RunState.TRAINING, "the resume")
    remote.request_stop()
    live_run.thread.join(60)
    assert live_run.outcome is RunOutcome.STOPPED
    acks = [e for e in live_run.events if isinstance(e, ev.ControlAck)]
    assert [a.command for a in acks] == ["pause", "evaluate", "resume", "stop"]
    assert all(remote.sender == a.sender for a in acks)
    stopped = [e for e in live_run.events if isinstance(e, ev.Stopped)][0]
    assert stopped.reason == f"stop requested by {remote.sender}"
    # Every attached screen reads the same acknowledgements from metrics.jsonl.
    seen = [e for e in MetricsFollower(live_run.path / "metrics.jsonl").poll() if isinstance(e, ev.ControlAck)]
    assert [a.command for a in seen] == ["pause", "evaluate", "resume", "stop"]
    assert not list((live_run.path / "control").iterdir())


def test_a_request_to_a_run_that_has_died_is_one_line(finished_run, monkeypatch, capsys, tmp_path):
    with pytest.raises(UsageError, match="the run is not running any more"):
        RemoteControl(finished_run).pause()
    assert main(["attach", str(finished_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the run is not running" in err and "watch" in err
    monkeypatch.chdir(tmp_path)
    assert main(["attach"]) == 2
    assert "no live run under ./runs" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_the_attached_screen_steers_the_run(live_run):
    live_run.wait(lambda: any(isinstance(e, ev.BatchEnd) for e in live_run.events), "training")
    app = AlexNetApp(TrainConfig(), attach=live_run.path)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await wait_for(
            pilot, lambda: app.state == RunState.TRAINING and app.run_screen.catching_up is False, timeout=30
        )
        await pilot.press("p")
        await wait_for(pilot, lambda: app.state == RunState.PAUSED, timeout=30)
        assert any("pause requested by" in n.message for n in app._notifications)
        await pilot.press("e")
        epochs = app.query_one("#epochs", DataTable)
        await wait_for(pilot, lambda: any(epochs.get_row_at(i)[0] == "eval" for i in range(epochs.row_count)), 30)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.state == RunState.TRAINING, timeout=30)
        await pilot.press("x")
        await wait_for(pilot, lambda: app.state == RunState.STOPPED, timeout=30)
        await pilot.press("q")  # leaves; the run (here already stopped) is not this screen's
    assert app.return_value == 0
    assert live_run.outcome is RunOutcome.STOPPED


@pytest.mark.asyncio
async def test_q_on_an_attached_screen_leaves_the_run_going(live_run):
    app = AlexNetApp(TrainConfig(), attach=live_run.path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.state == RunState.TRAINING, timeout=30)
        await pilot.press("q")
    batches = sum(isinstance(e, ev.BatchEnd) for e in live_run.events)
    live_run.wait(lambda: sum(isinstance(e, ev.BatchEnd) for e in live_run.events) > batches + 2, "more batches")
    assert live_run.thread.is_alive()


@pytest.mark.asyncio
async def test_a_long_history_is_on_screen_on_attach(tmp_path):
    """10,000 logged batches: the tables, charts and best epoch come from one read of the file."""
    run = tmp_path / "long"
    run.mkdir()
    lines = []
    for epoch in range(1, 11):
        lines.append(ev.EpochStarted(epoch, 10, 1000).to_json())
        for batch in range(1, 1001):
            loss = 2.0 / (epoch + batch / 1000)
            lines.append(ev.BatchEnd(epoch, 10, batch, 1000, loss, 0.5, loss, 0.5, 100.0).to_json())
        lines.append(ev.EpochEnd(epoch, 10, 1.0, 0.5, 1.0 / epoch, 0.5, 100.0, 10.0, epoch == 7).to_json())
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    app = AlexNetApp(TrainConfig(), attach=run, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(
            pilot, lambda: not app.run_screen.catching_up and app.query_one("#epochs", DataTable).row_count == 10, 30
        )
        assert app.query_one(BatchTable).row_count == 200  # the newest rows; all are in the file
        table = app.query_one(BatchTable)
        assert table.get_row_at(199)[1] == "1000/1000"
        bottom = table.render_line(table.scrollable_content_region.height - 1).text
        assert bottom.split()[:2] == ["10/10", "1000/1000"]  # the table follows the newest row
        caption = lambda: str(app.query_one("#chart-loss Label").render())  # noqa: E731
        assert "no epochs yet" in caption()  # a hidden tab is not drawn...
        await pilot.press("3")
        await wait_for(pilot, lambda: "best: epoch 7" in caption())  # ...until it is shown
        await pilot.press("q")


@pytest.mark.asyncio
async def test_an_attached_screen_says_when_the_run_is_killed(tmp_path):
    """kill -9 of the trainer (the OOM killer): the screen said TRAINING for as long as no key was pressed."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, TINY_ARGS

    run = tmp_path / "run"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tui", "--no-ui", *TINY_ARGS, "--epochs", "500", "--out", str(run)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not (run_is_live(run) and (run / "metrics.jsonl").is_file()):
            assert time.time() < deadline and trainer.poll() is None, "the run did not start"
            time.sleep(0.1)
        app = AlexNetApp(TrainConfig(), attach=run)
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await wait_for(pilot, lambda: app.state == RunState.TRAINING, 60)
            trainer.send_signal(signal.SIGKILL)
            trainer.wait(30)
            await wait_for(pilot, lambda: app.state == RunState.INTERRUPTED, 30)
            assert "INTERRUPTED" in str(app.query_one("#status").render())
            assert any("ended without a word" in toast.message for toast in app._notifications)
            await pilot.press("q")
        assert f"--resume {run}" in app.farewell()
    finally:
        trainer.kill()
        trainer.wait(30)


@pytest.mark.asyncio
@pytest.mark.parametrize(("key", "read_only", "folder"), [("p", False, "control"), ("x", True, "")],
                         ids=["attach-p", "watch-x"])  # fmt: skip
async def test_a_request_that_cannot_be_written_is_a_toast_and_the_screen_stays(live_run, key, read_only, folder):
    """The app ended abnormally when a request could not be written: attach's p after control/ became
    read-only, watch's x (a STOP file) in a folder the user may not write. A read-only bind mount
    makes it so even for root; the run's own open files write on."""
    import subprocess

    target = live_run.path / folder
    done = subprocess.run(["mount", "--bind", str(target), str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {done.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        app = AlexNetApp(TrainConfig(), attach=live_run.path, read_only=read_only)
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await wait_for(pilot, lambda: app.state == RunState.TRAINING, 60)
            await pilot.press(key)
            await wait_for(pilot, lambda: any(toast.title == "Not sent" for toast in app._notifications))
            assert "Read-only file system" in [t.message for t in app._notifications if t.title == "Not sent"][0]
            assert app.is_running and app.state == RunState.TRAINING  # nothing was asked, the screen is there
            await pilot.press("q")
    finally:
        subprocess.run(["umount", "--lazy", str(target)], check=False)  # the run still holds its files open
