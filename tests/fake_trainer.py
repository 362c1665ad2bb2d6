"""A scripted stand-in for the Trainer: the same interface, fixed numbers, no model. For snapshots
and for UI behaviour that must not depend on timing."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Control, RunOutcome, RunPosition, RunState
from alexnet_tui.engine import events as ev

EPOCHS, BATCHES = 2, 6
PACE_S = 0.1  # a batch of the paced trainer: keys land mid-epoch


def PacedTrainer(config: TrainConfig, subscribers=(), control: Control | None = None):  # noqa: N802 - a factory
    """The real engine at a human pace: the tiny model trains an epoch faster than a key press, and
    tests press keys mid-run. Each batch is reported on its own, and its report takes PACE_S."""
    from alexnet_tui.engine.trainer import Trainer

    def pace(event: ev.Event) -> None:
        if isinstance(event, ev.BatchEnd):
            time.sleep(PACE_S)

    return Trainer(config, [*subscribers, pace], control, report_every_s=0.0)


class ScriptedTrainer:
    hold_at: tuple[int, int] | None = None  # (epoch, batch) to wait at until stopped, for a mid-run picture
    fail_with: Exception | None = None

    def __init__(self, config: TrainConfig, subscribers: list, control: Control) -> None:
        self.config, self.subscribers, self.control = config, list(subscribers), control
        self.prepared = False
        self.run_dir = Path(tempfile.mkdtemp(prefix="scripted-run-"))  # where the app writes metrics.jsonl
        weakref.finalize(self, shutil.rmtree, self.run_dir, True)
        self.shown_dir = "runs/demo-run"  # what the screen shows, the same on every machine
        self.epoch, self.batch = 1, 0

    def subscribe(self, subscriber) -> None:
        self.subscribers.append(subscriber)

    def emit(self, event: ev.Event) -> None:
        for subscriber in self.subscribers:
            subscriber(event)

    def prepare(self) -> None:
        if not self.prepared:
            self.emit(ev.RunPrepared(str(self.run_dir), time=0))
        self.prepared = True

    def position(self) -> RunPosition:
        return RunPosition(self.prepared, self.epoch, self.batch, self.run_dir)

    def close(self) -> None:
        pass

    def evaluate_now(self, split: str = "val"):
        self.prepare()
        self.emit(ev.EvaluationEnd(split, 0.5, 0.75, 60, None, True, time=0))
        self.emit(ev.StateChanged(RunState.IDLE, time=0))

    def fit(self) -> RunOutcome:
        self.prepare()
        if self.fail_with is not None:
            raise self.fail_with
        self.emit(
            ev.RunStarted(
                self.shown_dir,
                "cpu",
                "off",
                {},
                {
                    "name": "demo",
                    "root": None,
                    "class_names": ["checks", "spots", "stripes"],
                    "train": 480,
                    "val": 60,
                    "test": 60,
                    "skipped": 0,
                },
                1,
                0,
                time=0,
            )
        )
        self.emit(ev.StateChanged(RunState.TRAINING, time=0))
        # The trainer's own figures, as a process on another machine would report them.
        self.emit(ev.MachineSample(4242, "gpu-box", 2150.0, 180.0, [90.0, 95.0], "cpu"))
        best = math.inf
        for epoch in range(1, EPOCHS + 1):
            self.emit(ev.EpochStarted(epoch, EPOCHS, BATCHES, time=0))
            for batch in range(1, BATCHES + 1):
                loss = 1.1 - 0.05 * (epoch - 1) * BATCHES - 0.05 * batch
                left = (EPOCHS - epoch) * BATCHES + BATCHES - batch
                row = ev.BatchEnd(epoch, EPOCHS, batch, BATCHES, loss, 0.5, loss + 0.01, 0.5, 40.0, 0.0, left * 0.8)
                row.lr = 1e-4
                self.emit(dataclasses.replace(row, time=0))
                if self.hold_at == (epoch, batch):
                    self.control.stop_event.wait(3)  # long enough for a snapshot; the app may exit without a stop
            val_loss = 1.0 - 0.2 * epoch
            self.emit(ev.BestCheckpoint(epoch, best, val_loss, f"{self.shown_dir}/best.pt", time=0))
            best = val_loss
            self.emit(ev.EpochEnd(epoch, EPOCHS, 0.9, 0.6, val_loss, 0.7, 40.0, 12.0, True, time=0))
        self.emit(ev.EvaluationEnd("test", 0.55, 0.8, 60, f"{self.shown_dir}/best.pt", time=0))
        self.emit(ev.Finished(best, 0.55, 0.8, 30.0, time=0))
        self.emit(ev.StateChanged(RunState.FINISHED, time=0))
        return RunOutcome.FINISHED
