"""Steering a run from another process or host: request files in RUN_DIR/control/, and is it alive?

The run (rank 0 under DDP) reads the requests at batch boundaries and acknowledges each with a
`control` event in metrics.jsonl, so every attached screen sees who asked for what. Files, not a
socket: they work for any user who may write the run directory, on any host that shares it.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from pathlib import Path

from alexnet_tui.engine.control import Command
from alexnet_tui.engine.run_dir import CONTROL_DIR, lock_is_held, lock_owner
from alexnet_tui.errors import UsageError
from alexnet_tui.safe_files import replace_text


def run_is_live(run_dir: Path) -> bool:
    """A process holds the run directory's lock (the run's writer is alive, here or on a host that
    shares the folder and its locks)."""
    return lock_is_held(run_dir)


def newest_live_run(folder: Path) -> Path | None:
    """The most recently started run under `folder` whose writer is alive."""
    if not folder.is_dir():
        return None
    live = [path for path in folder.iterdir() if path.is_dir() and run_is_live(path)]
    return max(live, key=lambda path: path.stat().st_mtime, default=None)


class RemoteControl:
    """The Control contract (pause, resume, request_evaluation, request_stop) for a run that
    another process is running: each call leaves a request file for it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.sender = f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"
        if os.environ.get("ALEXNET_TUI_VIA"):  # a browser tab's attach, started by serve
            self.sender += f" via {os.environ['ALEXNET_TUI_VIA']}"

    def check_writable(self) -> None:
        """Steering needs write access to the run directory: say so in one line if it is missing."""
        folder = self.run_dir / CONTROL_DIR
        if not os.access(folder if folder.exists() else self.run_dir, os.W_OK):
            raise UsageError(f"{self.run_dir}: you may not write to it, so you can watch this run but not steer it")

    def send(self, command: Command, sender: str = "") -> None:
        """One request file, written under a temp name and renamed, so the run never reads half (the
        sender is this process, whoever asks)."""
        command = Command(command)
        if not run_is_live(self.run_dir):
            raise UsageError(f"{self.run_dir}: the run is not running any more (see alexnet-tui runs); nothing sent")
        folder = self.run_dir / CONTROL_DIR
        folder.mkdir(exist_ok=True)
        if folder.is_symlink() or not folder.is_dir():  # never a request written through a planted link
            raise UsageError(f"{folder} is not a directory of this run (a link?); nothing sent")
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        # Written aside (exclusively, under a name nobody can guess) and renamed: the run never reads half.
        replace_text(folder / name, json.dumps({"command": command.value, "sender": self.sender, "time": time.time()}))

    def pause(self) -> None:
        self.send(Command.PAUSE)

    def resume(self) -> None:
        self.send(Command.RESUME)

    def request_evaluation(self) -> None:
        self.send(Command.EVALUATE)

    def request_stop(self, reason: str = "stop requested") -> None:
        self.send(Command.STOP)


def describe_owner(run_dir: Path) -> str:
    owner = lock_owner(run_dir)
    return f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "unknown process"
