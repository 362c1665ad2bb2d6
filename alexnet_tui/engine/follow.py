"""`tail -f` for metrics.jsonl: a run's events read back as they are written, by `watch` or anything else."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TextIO

from alexnet_tui.engine import events as ev


@dataclass
class FollowReset(ev.Event):
    """The followed file was truncated or replaced: what was shown came from another file."""

    name: ClassVar[str] = "follow_reset"


@dataclass
class CaughtUp(ev.Event):
    """Everything written so far has been read; what follows is live."""

    name: ClassVar[str] = "caught_up"


class MetricsFollower:
    """Reads whole lines only (a torn last line waits for its newline); a truncated or replaced
    file is read again from the start, announced by FollowReset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None
        self._inode: int | None = None
        self._partial = ""

    def poll(self) -> list[ev.Event]:
        """The events written since the last call; [CaughtUp()] once there is nothing new."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        events: list[ev.Event] = []
        if self._handle is None or stat.st_ino != self._inode or stat.st_size < self._handle.tell():
            if self._handle is not None:
                self._handle.close()
                events.append(FollowReset())
            self._handle = open(self.path, encoding="utf-8", errors="replace")
            self._inode, self._partial = stat.st_ino, ""
        chunk = self._handle.read()
        if not chunk:
            return [*events, CaughtUp()]
        *lines, self._partial = (self._partial + chunk).split("\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash, then ended by the next writer
            event = ev.from_json(record) if isinstance(record, dict) else None
            if event is not None:
                events.append(event)
        return events

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
