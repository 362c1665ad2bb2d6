"""fit / train_one_epoch for the tutorial's AlexNet; reports through events, never prints.

Set-up is in setup.py, what happens at a batch boundary in steering.py, the evaluation passes in
evaluating.py; each is mixed into Trainer, so one object holds a run and this file reads as the loop."""

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
from torch.utils.data import DataLoader

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.images import UNREADABLE
from alexnet_tui.data.loading import DataBundle
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.augment import augmented_input
from alexnet_tui.engine.checkpoint import CheckpointSaveError
from alexnet_tui.engine.checkpoint_writer import CheckpointWriter
from alexnet_tui.engine.control import Control
from alexnet_tui.engine.device import describe
from alexnet_tui.engine.distributed import all_reduce_sum, launched_ranks
from alexnet_tui.engine.evaluating import Evaluations
from alexnet_tui.engine.loaders import shut_down
from alexnet_tui.engine.machine import MachineSampler
from alexnet_tui.engine.recipe import (
    early_stop_message,
    patience_ran_out,
)
from alexnet_tui.engine.run_dir import RunDirectory
from alexnet_tui.engine.setup import Setup
from alexnet_tui.engine.steering import DIST_SYNC_BATCHES, Steering
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.engine.training_state import (
    RunOutcome,
    RunPosition,
    RunProgress,
    TrainingDiverged,
    training_payload,
    weights_payload,
)
from alexnet_tui.engine.window import MetricWindow

RunState = ev.RunState
REPORT_INTERVAL_S = 0.1  # metrics are read back from the device at most this often
# A save is written in the background over 3/4 of the fastest epoch's training time (the next save or a
# stop finds it done, however much faster later epochs are than the first), but never over more than
# this: a kill -9 or a lost machine right after "Saving Model!" loses at most this much on disk.
MAX_SAVE_SPREAD_S = 30.0


class Trainer(Setup, Steering, Evaluations):
    """One run: prepare() once, then fit() (again after a stop, to go on) or evaluate_now()."""

    def __init__(
        self,
        config: TrainConfig,
        subscribers: Iterable[ev.Subscriber] = (),
        control: Control | None = None,
        data: DataBundle | None = None,
    ) -> None:
        self.config = config
        self.ranks = launched_ranks()
        self.events = ev.EventBus(subscribers, muted=not self.ranks.main)
        self.control = control or Control()
        self.data = data
        self.prepared = False
        self.progress = RunProgress()
        self.run_dir: RunDirectory | None = None
        self.resume_notes: list[str] = []  # options changed on resume, said when the run starts
        self._last_poll = 0.0
        self._agreed_stop = self._agreed_pause = False  # under DDP: what the ranks agreed on last
        self._loaders: dict[str, DataLoader] = {}
        self._checkpoints: CheckpointWriter | None = None  # made with the first epoch (rank 0)
        self.fastest_epoch_s = float("inf")  # training seconds of the fastest epoch: paces the saves
        self._machine: MachineSampler | None = None  # this process's figures, for viewers anywhere

    # ---- events and the drivers' view ---------------------------------------------------------
    def subscribe(self, subscriber: ev.Subscriber) -> None:
        self.events.subscribe(subscriber)

    def emit(self, event: ev.Event) -> None:
        self.events.emit(event)

    def _state(self, state: RunState) -> None:
        self.emit(ev.StateChanged(state))

    def _last_figures(self) -> None:
        """What the run used, said as it ends (a run of seconds has no other sample), before its last word."""
        if self._machine is not None:
            self.emit(self._machine.sample())

    def position(self) -> RunPosition:
        return RunPosition(
            self.prepared, self.progress.epoch, self.progress.batch, self.run_dir.path if self.run_dir else None
        )

    # ---- the hot loop -------------------------------------------------------------------------
    def _batch_seed(self, epoch: int, batch: int) -> int:
        return self.config.seed * 1_000_003 + epoch * 10_007 + batch + self.ranks.rank * 7_919

    def _flips(self, epoch: int, batch: int, size: int) -> torch.Tensor:
        seed = self._batch_seed(epoch, batch)
        return torch.rand(size, generator=torch.Generator().manual_seed(seed)) < 0.5

    def _train_input(self, images: torch.Tensor, epoch: int) -> torch.Tensor:
        """The tutorial's flips; with --augment, random resized crops too (seeded per batch as the flips)."""
        flips = self._flips(epoch, self.progress.batch, len(images))
        if not self.config.augment:
            return to_model_input(images, self.device, flips, self.memory_format)
        # Another stream than the flips' (an LCG step of their seed), as reproducible on resume.
        seed = (self._batch_seed(epoch, self.progress.batch) * 6_364_136_223_846_793_005 + 1) % 2**63
        return augmented_input(images, self.device, flips, self.config.image_size, seed, self.memory_format)

    def _autocast(self) -> torch.autocast:
        dtype = self.amp_dtype or torch.float32
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """One optimizer step; returns [mean loss, hits, readable images, images] still on the device."""
        inputs = self._train_input(images, epoch)
        targets = labels.to(self.device, non_blocking=True)
        with self._autocast():
            logits = self.train_model(inputs)
            readable = (targets != UNREADABLE).sum()
            loss = self.criterion(logits.float(), targets) / readable.clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        hits = (logits.argmax(1) == targets).sum()
        images_in_batch = torch.tensor(float(len(labels)), device=self.device)
        stats = torch.stack([loss.detach().float(), hits.float(), readable.float(), images_in_batch])
        if self.ranks.distributed:
            # The whole job's figures, not one rank's: sum loss*count, hits and counts over ranks.
            totals = all_reduce_sum(torch.stack([stats[0] * stats[2], stats[1], stats[2], stats[3]]))
            stats = torch.stack([totals[0] / totals[2].clamp(min=1), totals[1], totals[2], totals[3]])
        return stats

    def train_one_epoch(self, epoch: int) -> bool:
        """Train from the saved batch to the end of the epoch; False if a stop request ended it early."""
        self.train_model.train()
        self.train_sampler.set_epoch(epoch, self.progress.batch)
        batches = self.train_sampler.total_batches()
        window = MetricWindow()
        self.emit(ev.EpochStarted(epoch, self.config.epochs, batches))
        fetch_start = time.perf_counter()
        for images, labels in self._loader("train"):
            window.data_wait += time.perf_counter() - fetch_start
            evaluate_now, must_pause = self._requests_at_boundary()
            if evaluate_now or must_pause:
                self._report(window, epoch, batches)
                if not self._at_boundary(epoch, evaluate_now):
                    return False
                window.restart()  # the pause or evaluation is not training time
                self.train_model.train()
            lr = self.learning_rate.apply(self.optimizer, self.progress.step)  # --schedule: per batch
            window.add(self._train_step(images, labels, epoch), lr)
            self.progress.batch += 1
            self.progress.step += 1
            if self.ranks.distributed:
                if self.progress.batch % DIST_SYNC_BATCHES == 0:  # the same batches on every rank
                    self._report(window, epoch, batches)
            elif window.elapsed() >= REPORT_INTERVAL_S:
                self._report(window, epoch, batches)
            fetch_start = time.perf_counter()
        self._report(window, epoch, batches)
        return True

    def _report(self, window: MetricWindow, epoch: int, batches: int) -> None:
        """Read the window back once, add it to the epoch's totals and emit a BatchEnd per batch."""
        if not len(window):
            return
        rows, seconds, wait_share = window.read()
        totals = self.progress.totals
        totals.seconds += seconds
        images = sum(row.images for row in rows)
        rate = images / seconds
        unreadable = int(images - sum(row.readable for row in rows))
        if unreadable:
            self.emit(ev.Notice(f"{unreadable} image(s) became unreadable after the scan; skipped", "warning"))
        first = self.progress.batch - len(rows)
        seconds_per_batch = seconds / len(rows)
        for offset, row in enumerate(rows):
            batch = first + offset + 1
            if self.config.stop_on_nan and not math.isfinite(row.loss):
                raise TrainingDiverged(
                    f"loss became {row.loss} at epoch {epoch}, batch {batch}; "
                    f"try a lower --lr (now {self.config.lr:g}); the best checkpoint is kept"
                )
            totals.add(row)
            left = (self.config.epochs - epoch) * batches + batches - batch
            self.emit(
                ev.BatchEnd(
                    epoch,
                    self.config.epochs,
                    batch,
                    batches,
                    row.loss,
                    row.hits / max(row.readable, 1),
                    totals.loss,
                    totals.accuracy,
                    rate,
                    wait_share,
                    left * seconds_per_batch,
                    row.lr,
                )
            )
        if self._machine is not None:
            self._machine.maybe_emit(self.emit)

    def _stop(self, epoch: int) -> None:
        path = self.save_last(wait=True)  # Stopped names a last.pt that is on disk
        self._last_figures()
        self.emit(ev.Stopped(epoch, self.progress.batch, str(path), self.control.stop_reason))
        self.control.stop_served()
        self._state(RunState.STOPPED)

    def _patience_ran_out(self, say: bool = True) -> bool:
        """--patience N: N epochs without a better val_loss end the run as finished (on best.pt)."""
        progress = self.progress
        if not patience_ran_out(self.config.patience, progress.epoch, progress.best_epoch):
            return False
        if say:
            message = early_stop_message(self.config.patience, progress.best_val_loss, progress.best_epoch)
            self.emit(ev.Notice(message, title="Early stopping"))
        return True

    # ---- checkpoints --------------------------------------------------------------------------
    # Off the hot path: the state is copied to the CPU here, on the training thread (training goes on
    # changing the tensors in place), and written by one background thread (engine/checkpoint_writer.py),
    # still atomically (temp file, fsync, os.replace). A save waits for the one before; a failed write
    # is raised as CheckpointSaveError at the next wait: the next epoch's end, a stop, the finish.
    def save_last(self, wait: bool = True, spread_s: float = 0.0) -> Path:
        """last.pt (after best.pt, if _save_best staged it): snapshotted now, written in the background
        (over about spread_s seconds). With wait, returns once both are on disk, or raises
        CheckpointSaveError."""
        if self.run_dir is None:  # a DDP rank other than 0: rank 0 writes for the job
            return self.shared_run_path / "last.pt"
        assert self.data is not None
        writer = self._checkpoints = self._checkpoints or CheckpointWriter()
        payload = training_payload(
            self.model,
            self.optimizer,
            self.scaler,
            self.device,
            self.config,
            self.data.class_names,
            self.progress,
            self.data.split,
        )
        path = writer.stage(payload, self.run_dir.path / "last.pt")
        writer.submit(0.0 if wait else spread_s)
        if wait:
            writer.wait()
        return path

    def _save_best(self, previous: tuple[float, int | None]) -> Path:
        """Stage best.pt (snapshotted now; save_last writes it first). If it cannot be written,
        best_val_loss and best_epoch go back to `previous`, so that a retry saves a best again."""
        if self.run_dir is None:
            return self.shared_run_path / "best.pt"
        assert self.data is not None
        writer = self._checkpoints = self._checkpoints or CheckpointWriter()
        payload = weights_payload(self.model, self.config, self.data.class_names, self.progress, self.data.split)

        def roll_back() -> None:
            self.progress.best_val_loss, self.progress.best_epoch = previous

        return writer.stage(payload, self.run_dir.path / "best.pt", on_failure=roll_back)

    # ---- the whole run ------------------------------------------------------------------------
    def fit(self) -> RunOutcome:
        """Train the remaining epochs, keep the best by val_loss, then report the best on the test split."""
        if not self.prepared:
            self.prepare()
        assert self.data is not None
        start = time.perf_counter()
        self.emit(
            ev.RunStarted(
                str(self.run_dir.path if self.run_dir else self.shared_run_path),
                describe(self.device),
                str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                self.config.to_dict(),
                self.data.summary(),
                self.progress.epoch,
                self.progress.batch,
                os.getpid(),
                socket.gethostname(),
            )
        )
        if self.data.skipped:
            self.emit(ev.Notice(f"skipped {len(self.data.skipped)} unreadable file(s) in {self.data.root}", "warning"))
        for change in self.data.changes:
            self.emit(ev.Notice(change, "warning"))
        if self.resume_notes:
            self.emit(ev.Notice("resumed with " + ", ".join(self.resume_notes)))
            self.resume_notes = []
        self._state(RunState.TRAINING)
        self._machine = self._machine or MachineSampler(self.device)  # from here: a run of seconds has figures too
        try:
            while self.progress.epoch <= self.config.epochs and not self._patience_ran_out():
                if not self._one_epoch():
                    return RunOutcome.STOPPED
            return self._finish(start)
        except TrainingDiverged as error:
            return self._fail(str(error))
        except CheckpointSaveError as error:
            # The weights and optimizer stay in memory: fix the disk and start again to save and go on.
            return self._fail(f"{error}; training state is kept in memory, fix it and start again (s in the TUI)")
        except torch.OutOfMemoryError:
            message = (
                f"out of memory on {self.device} at batch size {self.config.batch_size}; "
                f"try --batch-size {max(1, self.config.batch_size // 2)} or a smaller --image-size"
            )
        except Exception as error:  # noqa: BLE001 - reported as a Failed event with its traceback, not swallowed
            return self._fail(f"{type(error).__name__}: {error}", traceback.format_exc())
        # After OOM the exception's frames hold the big tensors: free them outside the except block.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self._fail(message)

    def _one_epoch(self) -> bool:
        """Train, validate, keep the best, save last.pt; False when a stop request ended it."""
        epoch, progress = self.progress.epoch, self.progress
        if self.run_dir is not None and self._checkpoints is None:
            # The snapshot's buffers are made while this epoch trains (after a step, when Adam's
            # moments exist), not between two epochs at the first save.
            self._checkpoints = CheckpointWriter()
            self._checkpoints.reserve_after_step(
                self.optimizer, lambda: {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            )
        if not self.train_one_epoch(epoch):
            return False
        result = self.evaluate("val")
        if result is None:
            self._stop(epoch)
            return False
        self._state(RunState.TRAINING)
        if writer := self._checkpoints:
            # The previous epoch's files were written while this epoch trained. One that failed is
            # raised here, its best_val_loss put back, before this epoch's result is judged against it.
            writer.wait()
        val_loss, val_acc = result
        totals = progress.totals
        improved = val_loss < progress.best_val_loss
        previous = (progress.best_val_loss, progress.best_epoch)
        if improved:
            progress.best_val_loss, progress.best_epoch = val_loss, epoch
            path = self._save_best(previous)
        ended = (progress.epoch, progress.batch, totals)
        progress.next_epoch()
        try:
            # One snapshot for best.pt and last.pt, written in the background while the next epoch
            # trains. The run's last epoch (the final one, or --patience ran out) waits: nothing is
            # left to overlap, _finish reads best.pt, and a failure is best raised before moving on.
            last = progress.epoch > self.config.epochs or self._patience_ran_out(say=False)
            self.fastest_epoch_s = min(self.fastest_epoch_s, totals.seconds)
            # The first last.pt is on disk before the epoch's line: until it is, a kill -9 leaves a run
            # that --resume cannot continue. Later ones are paced; the one before stays whole meanwhile.
            first = self.run_dir is not None and not (self.run_dir.path / "last.pt").exists()
            self.save_last(wait=last or first, spread_s=min(self.fastest_epoch_s * 0.75, MAX_SAVE_SPREAD_S))
        except CheckpointSaveError:
            # Nothing has trained since: a retry judges this epoch again and saves it (best_val_loss
            # was put back by the failed best.pt, if it was that one).
            progress.epoch, progress.batch, progress.totals = ended
            raise
        if improved:
            # Said once the weights are snapshotted, before they are durable ("Saving Model!", as in
            # the tutorial; on the final epoch they are on disk by now). A write that then fails ends
            # the run as Failed, "kept in memory", at the next wait, with best_val_loss put back to
            # what best.pt on disk holds, so that the retry saves a best again.
            self.emit(ev.BestCheckpoint(epoch, previous[0], val_loss, str(path)))
        self.emit(
            ev.EpochEnd(
                epoch,
                self.config.epochs,
                totals.loss,
                totals.accuracy,
                val_loss,
                val_acc,
                totals.seen / max(totals.seconds, 1e-9),
                totals.seconds,
                improved,
            )
        )
        return True

    def _settle_writes(self) -> None:
        """Let the checkpoint being written reach the disk: a run that failed otherwise (NaN, an
        error) still keeps its best.pt, on disk when Failed is said."""
        if writer := self._checkpoints:
            try:
                writer.wait()
            except Exception as error:  # noqa: BLE001 - nothing is left to fail: said, not raised
                self.emit(ev.Notice(f"the last checkpoint was not saved: {error}", "warning"))

    def _fail(self, message: str, details: str = "") -> RunOutcome:
        self._settle_writes()
        self._last_figures()
        self.emit(ev.Failed(message, details))
        self._state(RunState.FAILED)
        return RunOutcome.FAILED

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the checkpoint being written, shut down loader workers, release the run directory
        (and leave the DDP process group)."""
        self._settle_writes()
        if writer := self._checkpoints:
            writer.release()
        if self.ranks.distributed and dist.is_initialized():
            dist.destroy_process_group()
        for loader in self._loaders.values():
            shut_down(loader)
        self._loaders.clear()
        if self.run_dir is not None:
            self.run_dir.release()
