"""Thread-safe requests to a running engine (stop, pause, resume, evaluate now), read at batch boundaries.

`Command` names each request once: the keys call Control's methods, `attach` writes the command's
value into a request file (engine/remote.py), and the run hands what it reads to Control.send."""

from __future__ import annotations

import enum
import threading

from alexnet_tui.errors import StoppedBeforeStart

__all__ = ["Command", "Control", "StoppedBeforeStart", "Wants"]


class Command(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    EVALUATE = "evaluate"
    STOP = "stop"


class Wants(enum.Flag):
    """What the requests ask of the next batch boundary (under DDP, what the ranks agreed on)."""

    NOTHING = 0
    EVALUATE = enum.auto()
    PAUSE = enum.auto()
    STOP = enum.auto()


class Control:
    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._evaluate = threading.Event()
        self.stop_reason = "stop requested"

    def send(self, command: Command, sender: str = "") -> None:
        """A request by name, from a key, another process (attach) or a STOP file."""
        command = Command(command)
        if command is Command.PAUSE:
            self._running.clear()
        elif command is Command.RESUME:
            self._running.set()
        elif command is Command.EVALUATE:
            self._evaluate.set()
        elif command is Command.STOP:
            self.request_stop(f"stop requested by {sender}" if sender else "stop requested")

    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_reason = reason
        self.stop_event.set()
        self._running.set()  # a paused engine must wake up to stop

    def pause(self) -> None:
        self.send(Command.PAUSE)

    def resume(self) -> None:
        self.send(Command.RESUME)

    def request_evaluation(self) -> None:
        self.send(Command.EVALUATE)

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def take_wants(self) -> Wants:
        """What is asked now; an evaluation request is taken (answered once)."""
        wants = Wants.NOTHING
        if self._evaluate.is_set():
            self._evaluate.clear()
            wants |= Wants.EVALUATE
        if self.paused:
            wants |= Wants.PAUSE
        if self.stop_requested:
            wants |= Wants.STOP
        return wants

    def wait_while_paused(self, timeout: float = 0.1) -> None:
        self._running.wait(timeout)

    def stop_served(self) -> None:
        """The engine has stopped and saved for the request; the next start goes on.
        Only the engine clears a stop: a request that arrives before training begins is kept."""
        self.stop_event.clear()
        self._evaluate.clear()
        self._running.set()
        self.stop_reason = "stop requested"
