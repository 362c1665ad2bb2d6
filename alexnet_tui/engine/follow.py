"""`tail -f` for metrics.jsonl: a run's events read back as they are written, by `watch` or anything else."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TextIO

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.remote import describe_owner, run_is_live


@dataclass
class FollowReset(ev.Event):
    """The followed file was truncated or replaced: what was shown came from another file."""

    name: ClassVar[str] = "follow_reset"


@dataclass
class CaughtUp(ev.Event):
    """Everything written so far has been read; what follows is live."""

    name: ClassVar[str] = "caught_up"


@dataclass
class RunGone(ev.Event):
    """The run's process let go of its folder with the run still going by its own account: killed
    (kill -9, the OOM killer) or its machine lost. Said by the follower, never by a run."""

    name: ClassVar[str] = "run_gone"
    message: str


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


LIVENESS_S = 2.0  # how often a follower asks whether the run's process still holds its folder


class RunFollower:
    """A MetricsFollower that also notices the run dying without a word: every LIVENESS_S, if the
    newest state the run wrote is a busy one and nothing holds the folder's lock any more (after
    reading whatever it wrote last), RunGone, once."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.metrics = MetricsFollower(run_dir / "metrics.jsonl")
        self.state: ev.RunState | None = None  # the newest state the run wrote
        self.checked = time.monotonic()
        self.gone = False

    def poll(self) -> list[ev.Event]:
        events = self._read()
        if self.gone or self.state is None or not self.state.busy or time.monotonic() - self.checked < LIVENESS_S:
            return events
        self.checked = time.monotonic()
        if run_is_live(self.run_dir):
            return events
        events += self._read()  # what it wrote just before it let go (a run that ended well says so)
        if self.state.busy:
            self.gone = True
            events.append(
                RunGone(
                    f"the run ended without a word: its process ({describe_owner(self.run_dir)}) is gone "
                    f"(killed, or its machine lost); go on with alexnet-tui --no-ui --resume {self.run_dir}"
                )
            )
        return events

    def _read(self) -> list[ev.Event]:
        events = self.metrics.poll()
        for event in events:
            if isinstance(event, ev.StateChanged):
                self.state = event.state
        return events

    def close(self) -> None:
        self.metrics.close()
