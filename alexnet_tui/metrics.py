"""metrics.jsonl: the engine's event stream on disk, one JSON object per line with an `event` field."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from alexnet_tui.engine.events import Event, Notice
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
    """What a run writes beside its checkpoints as it goes: metrics.jsonl, and TensorBoard event
    files when the optional extra is installed. The headless runner and the TUI both use it."""

    def __init__(self, run_dir: Path, earlier: Iterable[Event] = ()) -> None:
        from alexnet_tui.tensorboard import tensorboard_writer

        self.metrics = MetricsWriter(run_dir / "metrics.jsonl")
        self.tensorboard = tensorboard_writer(run_dir)
        self.subscribers: list = [self.metrics] + ([self.tensorboard] if self.tensorboard else [])
        for event in earlier:
            for subscriber in self.subscribers:
                subscriber(event)

    def close(self) -> None:
        self.metrics.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class NoticeBacklog:
    """A subscriber keeping the notices said before the run folder exists (prepare: which ImageNet
    weights, verified or not, what --freeze trains), for RunFiles to write once it does."""

    def __init__(self) -> None:
        self.notices: list[Notice] | None = []

    def __call__(self, event: Event) -> None:
        if self.notices is not None and isinstance(event, Notice):
            self.notices.append(event)

    def take(self) -> list[Notice]:
        """The notices so far; later ones are not kept (RunFiles has them from then on)."""
        notices, self.notices = self.notices or [], None
        return notices
