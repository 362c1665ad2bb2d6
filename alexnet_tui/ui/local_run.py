"""The engine as the TUI runs it in this process: a trainer made by the factory, the run's files, the
worker thread it trains in, and the headless log a hangup leaves it with."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.app import App

from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Control
from alexnet_tui.engine import events as ev
from alexnet_tui.headless import LineReporter
from alexnet_tui.metrics import RunFiles

if TYPE_CHECKING:
    from alexnet_tui.engine import RunOutcome, Trainer

TrainerFactory = Callable[[TrainConfig, list[ev.Subscriber], Control], "Trainer"]
ENGINE_GROUP = "engine"  # the worker group the app watches for the engine's end


def real_trainer(config: TrainConfig, subscribers: list[ev.Subscriber], control: Control) -> Trainer:
    """The engine, imported when a run starts here: a screen on another process's run never loads torch."""
    from alexnet_tui.engine.trainer import Trainer

    return Trainer(config, subscribers, control)


class LocalRun:
    """One trainer at a time; its events go into `pending`, which the run screen drains."""

    def __init__(self, app: App, factory: TrainerFactory, control: Control, pending: deque[ev.Event]) -> None:
        self.app, self.factory, self.control, self.pending = app, factory, control, pending
        self.trainer: Trainer | None = None
        self.files: RunFiles | None = None  # metrics.jsonl (and TensorBoard) of the run trained here
        self.outcome: RunOutcome | None = None
        self.hangup_log: LineReporter | None = None
        self.hung_up = False

    def queue(self, event: ev.Event) -> None:
        """Called in the worker thread: queue only, never touch widgets here."""
        if not self.hung_up:  # nobody will drain the queue any more
            self.pending.append(event)

    def new(self, config: TrainConfig) -> None:
        """A trainer for `config`, the previous one closed (its loader workers, its folder's lock)."""
        self.close()
        self.files = RunFiles()  # written from when the trainer names its folder
        self.trainer = self.factory(config, [self.queue, self.files], self.control)

    def forget(self) -> None:
        """Nothing started (settings to fix, a stop before training began): the next s makes a new one."""
        self.close()
        self.trainer = None

    @property
    def prepared(self) -> bool:
        return self.trainer is not None and self.trainer.position().prepared

    def start(self, task: str) -> None:
        """fit or evaluate, in a thread worker; the app hears of its end through Worker.StateChanged."""
        self.app.run_worker(
            partial(self._run, task), thread=True, exclusive=True, group=ENGINE_GROUP, exit_on_error=False
        )

    def _run(self, task: str) -> None:
        assert self.trainer is not None
        if task == "fit":
            self.outcome = self.trainer.fit()
        else:
            self.trainer.evaluate_now("val")

    def go_headless(self) -> bool:
        """The terminal hung up: a run in progress goes on to its end in this process, logging its
        lines to RUN_DIR/train.log beside metrics.jsonl. False when there is no run to go on."""
        self.hung_up = True
        if self.trainer is None or self.files is None:
            return False
        self.files.keep_text_log()  # still preparing: train.log opens with the run folder
        self.hangup_log = LineReporter(open(os.devnull, "w"), live=False, log=self.files.write_line)
        self.hangup_log.line(f"the terminal hung up; the run goes on headless (pid {os.getpid()})")
        self.trainer.subscribe(self.hangup_log)
        return True

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
        if self.files is not None:
            self.files.close()
            self.files = None
        if self.hangup_log is not None:
            self.hangup_log.close()
            self.hangup_log = None
