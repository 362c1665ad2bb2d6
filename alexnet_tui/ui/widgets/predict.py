"""The Predict tab: type an image path, see the picture and its top classes from the run's best.pt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label
from textual.worker import Worker, WorkerState

from alexnet_tui.ui.pictures import PictureView
from alexnet_tui.ui.widgets.reflow_log import ReflowLog

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


class PredictPane(Vertical):
    # Ids, not type names: a type selector matches a class's own name, never an import alias.
    DEFAULT_CSS = """
    PredictPane { padding: 0 1; }
    PredictPane #predict-body { height: 1fr; }
    PredictPane #predict-results { width: 1fr; min-width: 30; height: 1fr; }
    PredictPane #predict-picture { width: 1fr; max-width: 48; height: 1fr; padding-left: 1; }
    """

    def __init__(self) -> None:
        super().__init__(id="predict-view")
        self.run_dir: Path | None = None  # set by the app once a run has a folder

    def compose(self) -> ComposeResult:
        yield Label("image path (enter to predict with the run's best.pt):")
        yield Input(placeholder="path/to/image.jpg", id="predict-path", compact=True)
        with Horizontal(id="predict-body"):
            # min_width: a RichLog lays each line out at least this wide (78 by default), which beside
            # the picture cut the answer off instead of wrapping it.
            yield ReflowLog(id="predict-results", max_lines=200, min_width=20)
            yield PictureView(id="predict-picture")

    @on(Input.Submitted, "#predict-path")
    def predict_path(self, message: Input.Submitted) -> None:
        path = message.value.strip()
        if not path:
            return
        best = self.run_dir / "best.pt" if self.run_dir else None
        if best is None or not best.exists():
            self.show("no best.pt yet: train at least one epoch (or watch a run that has one)")
            return
        self.predict(best, path)

    @work(thread=True, group="predict", exit_on_error=False)
    def predict(self, best: Path, image: str) -> tuple[str, PILImage | None]:
        """A fresh model from best.pt on the CPU: the training worker keeps the live model to itself.
        Returns the line and the picture as predicted on (upright); the UI thread shows them (a worker
        never touches widgets)."""
        import torch

        from alexnet_tui.data.images import open_rgb
        from alexnet_tui.engine.checkpoint import load_checkpoint
        from alexnet_tui.inference import model_from_checkpoint, predict_image

        payload = load_checkpoint(best)
        device = torch.device("cpu")
        line, readable = predict_image(model_from_checkpoint(payload, device), payload, image, 3, device)
        return line, open_rgb(image, upright=True) if readable else None

    @on(Worker.StateChanged)
    def predicted(self, message: Worker.StateChanged) -> None:
        if message.worker.group != "predict":
            return
        if message.state == WorkerState.SUCCESS:
            line, picture = message.worker.result
            self.show(line)
            self.query_one("#predict-picture", PictureView).image = picture  # the image beside its classes
        elif message.state == WorkerState.ERROR:
            self.show(f"cannot predict: {message.worker.error}")

    def show(self, line: str) -> None:
        self.query_one("#predict-results", ReflowLog).add(line)
