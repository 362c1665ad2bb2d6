"""TensorBoard event files in RUN_DIR/tensorboard, when the optional extra is installed
(`pip install 'alexnet-tui[tensorboard]'`); the values are metrics.jsonl's."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from alexnet_tui.engine import events as ev


def _quiet_writer_threads(previous: Any) -> Any:
    """tensorboard's writer thread re-raises a failed write (a full disk) in its own thread, which
    printed "Exception in thread" and a traceback; the writer gets the same error at its next call
    and says it in one line."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    return hook


class TensorBoardWriter:
    """A subscriber: batch and epoch figures as scalars, the settings as text."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not getattr(threading.excepthook, "alexnet_tui", False):
            threading.excepthook = _quiet_writer_threads(threading.excepthook)
            threading.excepthook.alexnet_tui = True  # type: ignore[attr-defined]
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self._batches_per_epoch = 1
        self.failed: str | None = None  # why the files stopped being written; metrics.jsonl goes on

    def __repr__(self) -> str:
        return "the TensorBoard writer"

    def __call__(self, event: ev.Event) -> None:
        if self.failed is not None:
            return
        try:
            self._write(event)
        except Exception as error:  # noqa: BLE001 - said once by the event bus, as one line
            self.failed = str(getattr(error, "strerror", None) or error)
            said = f"could not write {self.log_dir} ({self.failed}); metrics.jsonl has every figure"
            raise RuntimeError(said) from None

    def _write(self, event: ev.Event) -> None:
        scalar = self.writer.add_scalar
        if isinstance(event, ev.RunStarted):
            settings = "\n".join(f"    {key} = {value!r}" for key, value in event.config.items())
            self.writer.add_text("config", settings, walltime=event.time)
        elif isinstance(event, ev.EpochStarted):
            self._batches_per_epoch = event.batches
        elif isinstance(event, ev.BatchEnd):
            step = (event.epoch - 1) * event.batches + event.batch
            figures: dict[str, Any] = {
                "batch/loss": event.loss,
                "batch/acc": event.acc,
                "batch/running_loss": event.running_loss,
                "batch/running_acc": event.running_acc,
                "batch/images_per_sec": event.images_per_sec,
                "batch/lr": getattr(event, "lr", None),
            }
            for tag, value in figures.items():
                if value is not None:
                    scalar(tag, value, step, walltime=event.time)
        elif isinstance(event, ev.EpochEnd):
            for tag in ("train_loss", "train_acc", "val_loss", "val_acc", "images_per_sec"):
                scalar(f"epoch/{tag}", getattr(event, tag), event.epoch, walltime=event.time)
        elif isinstance(event, ev.Finished | ev.Stopped | ev.Failed):
            self.writer.flush()

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception as error:  # noqa: BLE001 - the run is over; its figures are in metrics.jsonl
            if self.failed is None:  # not said yet
                reason = getattr(error, "strerror", None) or error
                print(f"alexnet-tui: warning: could not finish {self.log_dir} ({reason}); metrics.jsonl has every "
                      "figure", file=sys.stderr)  # fmt: skip


def tensorboard_writer(run_dir: Path) -> TensorBoardWriter | None:
    """A writer when tensorboard is installed; None (and nothing changes) when it is not."""
    try:
        import tensorboard  # noqa: F401 - only to know whether the extra is installed
    except ImportError:
        return None
    return TensorBoardWriter(run_dir / "tensorboard")
