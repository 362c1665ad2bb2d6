"""metrics.jsonl: the engine's event stream on disk, one JSON object per line with an `event` field."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from alexnet_tui.engine.events import Event, Progress, RunPrepared
from alexnet_tui.safe_files import open_appending


class MetricsWriter:
    """A subscriber that appends each event as one line with one write(2) on an O_APPEND file, so a
    line is whole or torn, never interleaved. Readers skip a torn last line; the next line written
    after a torn one (a crash, a full disk) starts on a line of its own instead of fusing with it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = open_appending(self.path)
        self._torn = self.path.stat().st_size > 0 and not _ends_with_newline(self.path)

    def __call__(self, event: Event) -> None:
        if self._fd is None:
            return
        data = (json.dumps(event.to_json(), separators=(",", ":")) + "\n").encode()
        if self._torn:
            data = b"\n" + data
        self._torn = True  # until the whole line is down
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        self._torn = False

    def __repr__(self) -> str:
        return f"writing {self.path}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def read_metrics(path: str | Path) -> list[dict]:
    """Every whole line of a metrics file (a torn line from a crash is ignored)."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as file:  # a damaged byte spoils its line only
        for line in file:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):  # `[1, 2]` is JSON but no event
                records.append(record)
    return records


class RunFiles:
    """What a run writes beside its checkpoints as it goes: metrics.jsonl, TensorBoard's event files
    (with the optional extra) and, for a driver that prints lines, train.log. The headless runner and
    the TUI subscribe it from the start: what is said before the run folder exists (prepare: which
    ImageNet weights, what --freeze trains) is kept, and written once RunPrepared names the folder."""

    def __init__(self, text_log: bool = False) -> None:
        self.text_log = text_log  # train.log: the headless runner's lines (the TUI's after a hangup)
        self.run_dir: Path | None = None
        self.writers: list[Callable[[Event], None]] = []
        self.closers: list[Callable[[], None]] = []
        self.log: TextIO | None = None
        self._early: list[Event] = []
        self._early_lines: list[str] = []

    def __repr__(self) -> str:
        return f"the run's files in {self.run_dir}"

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPrepared) and self.run_dir is None:
            self._open(Path(event.run_dir))
        if self.run_dir is None:
            if not isinstance(event, Progress):  # a bar's moves are news only while they happen
                self._early.append(event)
            return
        for writer in self.writers:
            writer(event)

    def _open(self, run_dir: Path) -> None:
        from alexnet_tui.tensorboard import tensorboard_writer

        self.run_dir = run_dir
        metrics = MetricsWriter(run_dir / "metrics.jsonl")
        self.writers, self.closers = [metrics], [metrics.close]
        if (tensorboard := tensorboard_writer(run_dir)) is not None:
            self.writers.append(tensorboard)
            self.closers.append(tensorboard.close)
        if self.text_log:
            self._open_log()
        early, self._early = self._early, []
        for event in early:
            for writer in self.writers:
                writer(event)

    def keep_text_log(self) -> None:
        """From now on train.log too (the TUI's terminal hung up: the run goes on headless)."""
        self.text_log = True
        if self.run_dir is not None:
            self._open_log()

    def _open_log(self) -> None:
        if self.log is None and self.run_dir is not None:
            self.log = open(open_appending(self.run_dir / "train.log"), "a", encoding="utf-8")  # through no link
            early, self._early_lines = self._early_lines, []
            for text in early:
                self.write_line(text)

    def write_line(self, text: str) -> None:
        """A line of train.log (kept until the folder exists)."""
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()
        elif self.text_log:
            self._early_lines.append(text)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers = []
        if self.log is not None:
            self.log.close()
            self.log = None
