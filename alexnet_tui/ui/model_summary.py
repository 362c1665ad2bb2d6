"""The torchsummary table on the Model tab, and its narrow copy beside the settings form."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App
from textual.widgets import Static

from alexnet_tui.config import TrainConfig


def guess_classes(config: Any) -> int:
    """The class count for the summary shown before the data is read."""
    if config.num_classes:
        return config.num_classes
    return 3 if config.data == "demo" else 2


def narrow_summary(text: str) -> str:
    """torchsummary's table without the indent all its rows share, so that beside the settings form at
    100 columns the Param # column is not cut (the Model tab shows the table as printed)."""
    lines = text.rstrip().splitlines()
    rows = [line for line in lines if line.startswith(" ") and line.strip()]  # the layer table
    indent = min((len(line) - len(line.lstrip(" ")) for line in rows), default=0)
    narrowed = [line[indent:] if line.startswith(" " * indent) else line for line in lines]
    width = max((len(line) for line in narrowed if line.strip(" =-")), default=0)
    return "\n".join(line[:width] if not line.strip(" =-") else line for line in narrowed)


class ModelSummary:
    """Fills the widgets of class `summary`: built here, in a thread, for a run this screen trains;
    asked of `alexnet-tui summary` in a process of its own, once, for a run trained elsewhere, so that
    a viewer never loads torch (a served page starts one viewer per browser tab)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.asked_of_run = False

    def build(self, config: TrainConfig, num_classes: int, image_size: int) -> None:
        self._in_thread(partial(self._built, config, num_classes, image_size))

    def ask_of_run(self, run_dir: Path, config: TrainConfig) -> None:
        if not self.asked_of_run:
            self.asked_of_run = True
            self._in_thread(partial(self._asked, run_dir, config))

    def show(self, text: str) -> None:
        for widget in self.app.query(".summary").results(Static):
            widget.update(narrow_summary(text) if widget.id == "side-summary" else text.rstrip())

    def _in_thread(self, work: Any) -> None:
        self.app.run_worker(work, thread=True, exclusive=True, group="summary", exit_on_error=False)

    def _built(self, config: TrainConfig, num_classes: int, image_size: int) -> None:
        from alexnet_tui.engine.recipe import freeze
        from alexnet_tui.model import build_model, summary_text

        model = build_model(config.arch, num_classes, image_size, config.width)
        freeze(model, config.freeze)  # frozen features show as non-trainable parameters
        self.app.call_from_thread(self.show, summary_text(model))  # once per run, not per batch

    def _asked(self, run_dir: Path, config: TrainConfig) -> None:
        checkpoint = next((run_dir / name for name in ("best.pt", "last.pt") if (run_dir / name).is_file()), None)
        if checkpoint is not None:
            options = ["--checkpoint", str(checkpoint)]
        else:
            options = ["--arch", config.arch, "--num-classes", str(guess_classes(config)), "--width", str(config.width)]
            options += ["--image-size", str(config.image_size)] if config.image_size else []
        done = subprocess.run(
            [sys.executable, "-m", "alexnet_tui", "summary", *options], capture_output=True, text=True, timeout=120
        )
        text = done.stdout if done.returncode == 0 else f"no summary: {done.stderr.strip()}"
        self.app.call_from_thread(self.show, text)
