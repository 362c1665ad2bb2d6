"""The training loop for the tutorial's AlexNet; reports through events, never prints.

What it is made of lives beside it: the prepared run (prepared.py), one optimizer step (step.py),
what a batch boundary decides (boundary.py), the evaluations (evaluating.py) and the checkpoints
(saving.py). This file reads as the loop: fit -> epochs -> batches."""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.loading import DataBundle
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.boundary import DIST_SYNC_BATCHES, Boundary, Decision
from alexnet_tui.engine.checkpoint import CheckpointSaveError
from alexnet_tui.engine.control import Control
from alexnet_tui.engine.device import describe
from alexnet_tui.engine.distributed import launched_ranks, weights_agree
from alexnet_tui.engine.evaluating import evaluate, final_evaluation, requested_evaluation, write_report
from alexnet_tui.engine.machine import MachineSampler
from alexnet_tui.engine.prepared import PreparedRun, prepare_run
from alexnet_tui.engine.recipe import early_stop_message, patience_ran_out
from alexnet_tui.engine.saving import RunCheckpoints
from alexnet_tui.engine.step import train_step
from alexnet_tui.engine.training_state import RunOutcome, RunPosition, RunProgress, TrainingDiverged
from alexnet_tui.engine.window import BatchFigures, MetricWindow

RunState = ev.RunState
REPORT_INTERVAL_S = 0.1  # metrics are read back from the device at most this often


class Trainer:
    """One run: prepare() once, then fit() (again after a stop, to go on) or evaluate_now()."""

    def __init__(
        self,
        config: TrainConfig,
        subscribers: Iterable[ev.Subscriber] = (),
        control: Control | None = None,
        data: DataBundle | None = None,
        report_every_s: float | None = None,
    ) -> None:
        self.config = config
        self.ranks = launched_ranks()
        self.events = ev.EventBus(subscribers, muted=not self.ranks.main)
        self.control = control or Control()
        self.data = data  # loaded by prepare() when not given
        # A window of batches is read back from the device and reported at most this often (0: every batch).
        self.report_every_s = REPORT_INTERVAL_S if report_every_s is None else report_every_s
        self.run: PreparedRun | None = None
        self.boundary: Boundary | None = None
        self.checkpoints: RunCheckpoints | None = None
        self._machine: MachineSampler | None = None  # this process's figures, for viewers anywhere

    # ---- events and the drivers' view ---------------------------------------------------------
    def subscribe(self, subscriber: ev.Subscriber) -> None:
        self.events.subscribe(subscriber)

    def emit(self, event: ev.Event) -> None:
        self.events.emit(event)

    def _state(self, state: RunState) -> None:
        self.emit(ev.StateChanged(state))

    def position(self) -> RunPosition:
        if self.run is None:
            return RunPosition(False, 1, 0, None)
        progress, run_dir = self.run.progress, self.run.run_dir
        return RunPosition(True, progress.epoch, progress.batch, run_dir.path if run_dir else None)

    def prepare(self) -> PreparedRun:
        """Set the run up (once); raises UsageError for anything the user must fix."""
        if self.run is None:
            run = prepare_run(self.config, self.ranks, self.control, self.emit, self.data)
            self.data, self.config = run.data, run.config
            self.boundary = Boundary(self.control, self.ranks, run.device, run.run_dir, self.emit)
            self.checkpoints = RunCheckpoints(run, self.emit)
            self.run = run
            self.emit(ev.RunPrepared(str(run.run_path)))
        return self.run

    @property
    def progress(self) -> RunProgress:
        return self.run.progress if self.run is not None else RunProgress()

    # ---- the whole run ------------------------------------------------------------------------
    def fit(self) -> RunOutcome:
        """Train the remaining epochs, keep the best by val_loss, then report the best on the test split."""
        run = self.prepare()
        start = time.perf_counter()
        self._say_start(run)
        self._state(RunState.TRAINING)
        self._machine = self._machine or MachineSampler(run.device)  # from here: a run of seconds has figures too
        try:
            while run.progress.epoch <= run.config.epochs and not self._patience_ran_out():
                if not self._one_epoch(run):
                    return RunOutcome.STOPPED
            return self._finish(run, start)
        except TrainingDiverged as error:
            return self._fail(str(error))
        except CheckpointSaveError as error:
            # The weights and optimizer stay in memory: fix the disk and start again to save and go on.
            return self._fail(f"{error}; training state is kept in memory, fix it and start again (s in the TUI)")
        except torch.OutOfMemoryError:
            message = (
                f"out of memory on {run.device} at batch size {run.config.batch_size}; "
                f"try --batch-size {max(1, run.config.batch_size // 2)} or a smaller --image-size"
            )
        except Exception as error:  # noqa: BLE001 - reported as a Failed event with its traceback, not swallowed
            return self._fail(f"{type(error).__name__}: {error}", traceback.format_exc())
        # After OOM the exception's frames hold the big tensors: free them outside the except block.
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
        return self._fail(message)

    def _say_start(self, run: PreparedRun) -> None:
        amp = str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off"
        self.emit(ev.RunStarted(str(run.run_path), describe(run.device), amp, run.config.to_dict(), run.data.summary(),
                                run.progress.epoch, run.progress.batch, os.getpid(), socket.gethostname()))  # fmt: skip
        if run.data.skipped:
            self.emit(ev.Notice(f"skipped {len(run.data.skipped)} unreadable file(s) in {run.data.root}", "warning"))
        for change in run.data.changes:
            self.emit(ev.Notice(change, "warning"))
        if run.resume_notes:
            self.emit(ev.Notice("resumed with " + ", ".join(run.resume_notes)))
            run.resume_notes = []

    def _one_epoch(self, run: PreparedRun) -> bool:
        """Train, validate, keep the best, save last.pt; False when a stop request ended it."""
        assert self.checkpoints is not None and self.boundary is not None
        progress, epoch = run.progress, run.progress.epoch
        if not self.train_one_epoch(epoch):
            return False
        result = evaluate(run, "val", self.emit, self.boundary.stop_now)
        if result is None:
            self._stop(epoch)
            return False
        self._state(RunState.TRAINING)
        # The previous epoch's files were written while this epoch trained. One that failed is raised
        # here, its best_val_loss put back, before this epoch's result is judged against it.
        self.checkpoints.wait()
        val_loss, val_acc = result
        totals = progress.totals
        improved = val_loss < progress.best_val_loss
        previous = (progress.best_val_loss, progress.best_epoch)
        if improved:
            progress.best_val_loss, progress.best_epoch = val_loss, epoch
            best = self.checkpoints.stage_best(previous)
        ended = (progress.epoch, progress.batch, totals)
        progress.next_epoch()
        try:
            # One snapshot for best.pt and last.pt, written in the background while the next epoch
            # trains. The run's last epoch waits: nothing is left to overlap and _finish reads best.pt.
            # So does the first: until a last.pt is on disk, a kill -9 leaves a run --resume cannot continue.
            last = progress.epoch > run.config.epochs or self._patience_ran_out(say=False)
            first = not self.checkpoints.last.exists()
            self.checkpoints.save_last(wait=last or first)
        except CheckpointSaveError:
            # Nothing has trained since: a retry judges this epoch again and saves it (best_val_loss
            # was put back by the failed best.pt, if it was that one).
            progress.epoch, progress.batch, progress.totals = ended
            raise
        if improved:
            # Said once the weights are snapshotted, before they are durable ("Saving Model!", as in the
            # tutorial). A write that then fails ends the run as Failed at the next wait.
            self.emit(ev.BestCheckpoint(epoch, previous[0], val_loss, str(best)))
        self.emit(ev.EpochEnd(epoch, run.config.epochs, totals.loss, totals.accuracy, val_loss, val_acc,
                              totals.seen / max(totals.seconds, 1e-9), totals.seconds, improved))  # fmt: skip
        return True

    def train_one_epoch(self, epoch: int) -> bool:
        """Train from the saved batch to the end of the epoch; False if a stop request ended it early."""
        run = self.prepare()
        progress = run.progress
        run.train_model.train()
        run.train_sampler.set_epoch(epoch, progress.batch)
        batches = run.train_sampler.total_batches()
        window = MetricWindow()
        self.emit(ev.EpochStarted(epoch, run.config.epochs, batches))
        fetch_start = time.perf_counter()
        for images, labels in run.loader("train"):
            window.data_wait += time.perf_counter() - fetch_start
            if not self._at_boundary(run, window, epoch, batches):
                return False
            lr = run.learning_rate.apply(run.optimizer, progress.step)  # --schedule: per batch
            window.add(self.train_step(images, labels, epoch), lr)
            progress.batch += 1
            progress.step += 1
            if run.ranks.distributed:
                if progress.batch % DIST_SYNC_BATCHES == 0:  # the same batches on every rank
                    self._report(window, epoch, batches)
            elif window.elapsed() >= self.report_every_s:
                self._report(window, epoch, batches)
            fetch_start = time.perf_counter()
        self._report(window, epoch, batches)
        return True

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """One optimizer step at the current batch (step.py); figures stay on the device."""
        run = self.prepare()
        return train_step(run, images, labels, epoch, run.progress.batch)

    def _at_boundary(self, run: PreparedRun, window: MetricWindow, epoch: int, batches: int) -> bool:
        """Before the next batch: go on, or serve an evaluation or a pause first; False to stop here."""
        assert self.boundary is not None
        decision = self.boundary.decide(run.progress.batch)
        if decision is Decision.GO:
            return True
        self._report(window, epoch, batches)
        paused = False
        while decision is not Decision.GO:
            if decision is Decision.STOP:
                self._stop(epoch)
                return False
            if decision is Decision.EVALUATE:
                requested_evaluation(run, self.emit, self.boundary.stop_now)
                paused = False  # the evaluation said EVALUATING: say PAUSED again if still paused
            elif not paused:
                self._state(RunState.PAUSED)
                paused = True
            else:
                self.boundary.wait_while_paused()
            decision = self.boundary.decide()
        self._state(RunState.TRAINING)
        window.restart()  # the pause or evaluation is not training time
        run.train_model.train()
        return True

    def _report(self, window: MetricWindow, epoch: int, batches: int) -> None:
        """Read the window back once, stop on a loss that diverged, emit a BatchEnd per batch."""
        if not len(window):
            return
        run = self.prepare()
        rows, seconds, wait_share = window.read()
        first = run.progress.batch - len(rows) + 1
        self._stop_if_diverged(rows, epoch, first)
        images = sum(row.images for row in rows)
        if unreadable := int(images - sum(row.readable for row in rows)):
            self.emit(ev.Notice(f"{unreadable} image(s) became unreadable after the scan; skipped", "warning"))
        totals = run.progress.totals
        totals.seconds += seconds
        rate, seconds_per_batch = images / seconds, seconds / len(rows)
        for batch, row in enumerate(rows, start=first):
            totals.add(row)
            left = (run.config.epochs - epoch) * batches + batches - batch
            accuracy = row.hits / max(row.readable, 1)
            self.emit(ev.BatchEnd(epoch, run.config.epochs, batch, batches, row.loss, accuracy, totals.loss,
                                  totals.accuracy, rate, wait_share, left * seconds_per_batch, row.lr))  # fmt: skip
        if self._machine is not None:
            self._machine.maybe_emit(self.emit)

    def _stop_if_diverged(self, rows: list[BatchFigures], epoch: int, first: int) -> None:
        """--stop-on-nan (the default): a loss that is no longer a finite number ends the run. Checked
        as each window is read back (a check per step would sync the device at every batch)."""
        if not self.config.stop_on_nan:
            return
        for batch, row in enumerate(rows, start=first):
            if not math.isfinite(row.loss):
                raise TrainingDiverged(
                    f"loss became {row.loss} at epoch {epoch}, batch {batch}; "
                    f"try a lower --lr (now {self.config.lr:g}); the best checkpoint is kept"
                )

    def _patience_ran_out(self, say: bool = True) -> bool:
        """--patience N: N epochs without a better val_loss end the run as finished (on best.pt)."""
        progress = self.progress
        if not patience_ran_out(self.config.patience, progress.epoch, progress.best_epoch):
            return False
        if say:
            message = early_stop_message(self.config.patience, progress.best_val_loss, progress.best_epoch)
            self.emit(ev.Notice(message, title="Early stopping"))
        return True

    # ---- the ends of a run --------------------------------------------------------------------
    def _finish(self, run: PreparedRun, start: float) -> RunOutcome:
        """Reload the best weights into a model of their own and report them on data never used to
        pick them. The training model keeps the last weights, which a stop here saves to last.pt."""
        assert self.checkpoints is not None and self.boundary is not None
        self.checkpoints.wait()  # best.pt is read below
        if run.ranks.distributed:
            if not weights_agree(run.model, run.device):
                return self._fail("the ranks' weights differ; the DDP run is not consistent")
            self.emit(ev.Notice(f"weights identical on all {run.ranks.world_size} ranks"))
        if not math.isfinite(run.progress.best_val_loss):  # the same on every rank: reduced
            # NaN in validation only (--no-stop-on-nan): no epoch was ever better, so no best.pt exists.
            return self._fail(
                f"val_loss was never a finite number, so no best.pt was saved; last.pt holds the last "
                f"weights; try a lower --lr (now {run.config.lr:g})"
            )
        result = final_evaluation(run, self.checkpoints.best, self.emit, self.boundary.stop_now)
        if result is None:
            self._stop(run.progress.epoch)
            return RunOutcome.STOPPED
        self._last_figures()
        self.emit(ev.Finished(run.progress.best_val_loss, result[0], result[1], time.perf_counter() - start))
        self._state(RunState.FINISHED)
        return RunOutcome.FINISHED

    def evaluate_now(self, split: str = "val") -> Path | None:
        """`e` between runs (idle, stopped, finished), from the driver's thread: prepare if need
        be, write the full report, and say the state the run is back in."""
        run = self.prepare()
        assert self.boundary is not None
        written = write_report(run, split, self.emit, self.boundary.stop_now)
        if written is None:
            self.control.stop_served()  # x cut the report short; the next start must not stop at once
        if run.progress.epoch > run.config.epochs or self._patience_ran_out(say=False):
            self._state(RunState.FINISHED)
        else:
            self._state(RunState.STOPPED if self.position().started else RunState.IDLE)
        return None if written is None else written[0]

    def save_last(self, wait: bool = True) -> Path:
        """last.pt now (a driver's or a test's save between runs)."""
        self.prepare()
        assert self.checkpoints is not None
        return self.checkpoints.save_last(wait)

    def _stop(self, epoch: int) -> None:
        assert self.checkpoints is not None
        path = self.checkpoints.save_last(wait=True)  # Stopped names a last.pt that is on disk
        self._last_figures()
        self.emit(ev.Stopped(epoch, self.progress.batch, str(path), self.control.stop_reason))
        self.control.stop_served()
        self._state(RunState.STOPPED)

    def _fail(self, message: str, details: str = "") -> RunOutcome:
        if self.checkpoints is not None:
            self.checkpoints.settle()
        self._last_figures()
        self.emit(ev.Failed(message, details))
        self._state(RunState.FAILED)
        return RunOutcome.FAILED

    def _last_figures(self) -> None:
        """What the run used, said as it ends (a run of seconds has no other sample), before its last word."""
        if self._machine is not None:
            self.emit(self._machine.sample())

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the checkpoint being written, shut down loader workers, release the run directory
        (and leave the DDP process group)."""
        if self.checkpoints is not None:
            self.checkpoints.close()
        if self.ranks.distributed and dist.is_initialized():
            dist.destroy_process_group()
        if self.run is not None:
            self.run.close()
