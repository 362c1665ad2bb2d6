"""TensorBoard event files in RUN_DIR/tensorboard, when the optional extra is installed
(`pip install 'alexnet-tui[tensorboard]'`); the values are metrics.jsonl's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alexnet_tui.engine import events as ev


class TensorBoardWriter:
    """A subscriber: batch and epoch figures as scalars, the settings as text."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self._batches_per_epoch = 1

    def __repr__(self) -> str:
        return "the TensorBoard writer"

    def __call__(self, event: ev.Event) -> None:
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
        self.writer.close()


def tensorboard_writer(run_dir: Path) -> TensorBoardWriter | None:
    """A writer when tensorboard is installed; None (and nothing changes) when it is not."""
    try:
        import tensorboard  # noqa: F401 - only to know whether the extra is installed
    except ImportError:
        return None
    return TensorBoardWriter(run_dir / "tensorboard")
