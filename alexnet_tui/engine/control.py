"""Thread-safe requests to a running engine (stop, pause, resume, evaluate now), read at batch boundaries."""

from __future__ import annotations

import threading

from alexnet_tui.errors import StoppedBeforeStart

__all__ = ["Control", "StoppedBeforeStart"]


class Control:
    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._evaluate = threading.Event()
        self.stop_reason = "stop requested"

    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_reason = reason
        self.stop_event.set()
        self._running.set()  # a paused engine must wake up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def request_evaluation(self) -> None:
        self._evaluate.set()

    def apply(self, command: str, sender: str) -> None:
        """A request from elsewhere (attach, a STOP file): the same effect as the keys."""
        if command == "pause":
            self.pause()
        elif command == "resume":
            self.resume()
        elif command == "evaluate":
            self.request_evaluation()
        elif command == "stop":
            self.request_stop(f"stop requested by {sender}")

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def take_evaluation_request(self) -> bool:
        """True once per request: the engine runs one evaluation for it."""
        if self._evaluate.is_set():
            self._evaluate.clear()
            return True
        return False

    def wait_while_paused(self, timeout: float = 0.1) -> None:
        self._running.wait(timeout)

    def stop_served(self) -> None:
        """The engine has stopped and saved for the request; the next start goes on.
        Only the engine clears a stop: a request that arrives before training begins is kept."""
        self.stop_event.clear()
        self._evaluate.clear()
        self._running.set()
        self.stop_reason = "stop requested"
