"""A run's best.pt and last.pt: what is saved when, and what a failed write undoes. One owner.

Off the hot path: the state is copied to the CPU on the training thread (training goes on changing
the tensors in place) and written by one background thread (checkpoint_writer.py), still atomically
(temp file, fsync, os.replace). A save waits for the one before; a failed write is raised as
CheckpointSaveError at the next wait: the next epoch's end, a stop, the finish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint_writer import CheckpointWriter
from alexnet_tui.engine.prepared import PreparedRun
from alexnet_tui.engine.training_state import training_payload, weights_payload


class RunCheckpoints:
    """Rank 0 writes the files; the other ranks of a DDP job only name them."""

    def __init__(self, run: PreparedRun, emit: Callable[[ev.Event], None]) -> None:
        self.run, self.emit = run, emit
        self.writer = CheckpointWriter() if run.run_dir is not None else None

    @property
    def last(self) -> Path:
        return self.run.run_path / "last.pt"

    @property
    def best(self) -> Path:
        return self.run.run_path / "best.pt"

    def save_last(self, wait: bool = True) -> Path:
        """last.pt (after best.pt, if stage_best staged it): snapshotted now, written in the background.
        With wait, returns once both are on disk, or raises CheckpointSaveError."""
        if self.writer is None:
            return self.last
        run = self.run
        payload = training_payload(
            run.model,
            run.optimizer,
            run.scaler,
            run.device,
            run.config,
            run.data.class_names,
            run.progress,
            run.data.split,
        )
        self.writer.stage(payload, self.last)
        self.writer.submit()
        if wait:
            self.writer.wait()
        return self.last

    def stage_best(self, previous: tuple[float, int | None]) -> Path:
        """best.pt, snapshotted now (save_last writes it first). If it cannot be written, the run's
        best_val_loss and best_epoch go back to `previous`, so that a retry saves a best again."""
        if self.writer is None:
            return self.best
        run = self.run

        def roll_back() -> None:
            run.progress.best_val_loss, run.progress.best_epoch = previous

        payload = weights_payload(run.model, run.config, run.data.class_names, run.progress, run.data.split)
        return self.writer.stage(payload, self.best, on_failure=roll_back)

    def wait(self) -> None:
        """The save in progress on disk; its failure raised here (CheckpointSaveError)."""
        if self.writer is not None:
            self.writer.wait()

    def settle(self) -> None:
        """Let the checkpoint being written reach the disk: a run that failed otherwise (NaN, an error)
        still keeps its best.pt, on disk when Failed is said. A failure now is said, not raised."""
        try:
            self.wait()
        except Exception as error:  # noqa: BLE001 - nothing is left to fail: said, not raised
            self.emit(ev.Notice(f"the last checkpoint was not saved: {error}", "warning"))

    def close(self) -> None:
        self.settle()
        if self.writer is not None:
            self.writer.release()
