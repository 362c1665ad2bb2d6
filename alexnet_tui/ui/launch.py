"""Starting the TUI as a process: helper processes, fd 2, and the signals Textual leaves to us."""

from __future__ import annotations

import signal
import sys
from typing import Any

from alexnet_tui.config import TrainConfig
from alexnet_tui.headless import exit_code, request_from_handler
from alexnet_tui.paths import cache_dir, fresh_line
from alexnet_tui.ui import terminal
from alexnet_tui.ui.app import AlexNetApp


class SignalRouter:
    """SIGTERM and SIGHUP for the TUI, installed in the main thread before Textual starts (Textual
    handles neither). While the screen runs, the app decides; before it, the signal waits for it;
    after a hangup closed the screen, SIGTERM still stops the run gracefully."""

    def __init__(self, app: AlexNetApp) -> None:
        self.app = app
        self.received: list[int] = []

    def install(self) -> None:
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, self)

    def __call__(self, number: int, _frame: object) -> None:
        self.received.append(number)
        loop = self.app.loop
        if self.app.hung_up:
            if number == signal.SIGTERM:
                request_from_handler(self.app.control.request_stop, "SIGTERM received")
        elif loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self.app.on_signal, number)  # safe from a signal handler
        else:
            self.app.early_signals.append(number)


def run_app(config: TrainConfig, **options: Any) -> int:
    terminal.redirect_stderr(cache_dir() / "tui-stderr.log")
    app = AlexNetApp(config, capture_stderr=True, **options)
    signals = SignalRouter(app)
    signals.install()
    try:
        result = app.run()
    finally:
        terminal.restore_stderr()
    if app.hung_up and result is None:
        # Textual's run returned once the engine's thread finished (asyncio waits for its executor).
        app.engine.close()
        return exit_code(app.engine.outcome, signals.received) if app.engine.outcome else 0
    if result is None:
        print("alexnet-tui: the app ended abnormally", file=sys.stderr)
        return 1
    said = app.farewell()
    if said:
        # A key typed before the screen took the terminal was echoed on this line: start it afresh.
        print(fresh_line(sys.stderr) + said, file=sys.stderr)
    return result
