"""Viewers are light: `runs`, `attach`, `watch` and the served page never load torch, and the
machine panel of a run shows the training process's own figures, carried by metrics.jsonl."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.follow import MetricsFollower
from tests.conftest import ROOT, TINY_ARGS, tiny_config

# In a process of its own (this one has torch loaded): list runs, then open the attached screen
# on a finished run, visit every tab but Model (it asks a process of its own), and say whether
# torch was ever imported. The demo run's report draws its mistakes from the demo indices it records.
VIEWER = """
import asyncio, sys
from pathlib import Path
from alexnet_tui.cli import main
from alexnet_tui.config import TrainConfig
from alexnet_tui.ui.app import AlexNetApp

run = Path(sys.argv[1])
TABS = {"3": "charts", "4": "predict", "5": "report", "6": "log", "1": "train"}
assert main(["runs", str(run.parent)]) == 0
assert "torch" not in sys.modules, "runs loaded torch"

async def look() -> None:
    app = AlexNetApp(TrainConfig(), attach=run, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(200):
            await pilot.pause(0.05)
            if app.query_one("#epochs").row_count:
                break
        for key in ("3", "4", "5", "6", "1"):  # charts, predict, report, log, train
            await pilot.press(key, "escape")  # Charts and Predict give their field the keys
            await pilot.pause()
            assert app.query_one("TabbedContent").active.startswith(TABS[key]), key
        await pilot.press("q")

asyncio.run(look())
print("torch loaded" if "torch" in sys.modules else "no torch")
"""


def test_runs_and_an_attached_screen_never_load_torch(finished_run):
    done = subprocess.run(
        [sys.executable, "-c", VIEWER, str(finished_run)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "first" in done.stdout  # the listing names the run
    assert done.stdout.strip().endswith("no torch")


def test_the_trainer_writes_its_own_figures_for_viewers_to_read(tmp_path, monkeypatch):
    from alexnet_tui.cli import main

    monkeypatch.setattr("alexnet_tui.engine.machine.FIRST_SAMPLE_S", 0.0)
    monkeypatch.setattr("alexnet_tui.engine.machine.SAMPLE_INTERVAL_S", 0.0)
    monkeypatch.setattr("alexnet_tui.engine.trainer.REPORT_INTERVAL_S", 0.0)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    events = MetricsFollower(tmp_path / "run" / "metrics.jsonl").poll()
    samples = [event for event in events if isinstance(event, ev.MachineSample)]
    assert samples, "no machine sample in metrics.jsonl"
    sample = samples[-1]
    assert (sample.pid, sample.host, sample.device) == (os.getpid(), socket.gethostname(), "cpu")
    assert sample.rss_mib > 50 and sample.process_cpu_percent >= 0  # this process: torch alone is more
    assert len(sample.cores_percent) == os.cpu_count()
    assert sample.gpu_allocated_gib is None  # a CPU run says nothing of a GPU


@pytest.mark.asyncio
async def test_the_panel_names_whose_figures_it_shows(tmp_path):
    from alexnet_tui.ui.app import AlexNetApp
    from alexnet_tui.ui.widgets.system import SystemPanel
    from tests.fake_trainer import ScriptedTrainer
    from tests.test_ui import wait_for

    app = AlexNetApp(tiny_config(tmp_path, epochs=1), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")  # the machine panel is beside the charts
        panel = lambda: str(app.query_one(SystemPanel).render())  # noqa: E731
        assert "trainer:" not in panel()  # before a run there is no trainer to speak of
        await pilot.press("escape", "s")  # the Charts tab's field had the keys; a start shows Train
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("3")
        await wait_for(pilot, lambda: "trainer: pid 4242 on gpu-box" in panel())
        assert "2150 MiB" in panel()
        await pilot.press("q")


def test_a_run_of_seconds_leaves_its_figures_too(finished_run):
    """The first sample comes a second into training: a short run had none, and the panel of a
    finished run said "no figures yet"."""
    events = MetricsFollower(finished_run / "metrics.jsonl").poll()
    last = {type(event): index for index, event in enumerate(events)}
    assert ev.MachineSample in last and last[ev.MachineSample] > last[ev.EpochEnd]  # one as it ended
