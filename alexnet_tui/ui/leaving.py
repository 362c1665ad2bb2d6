"""How the console ends: q and ctrl+q (asking first while a run is busy), SIGTERM (stop, save, exit
143) and SIGHUP (the terminal is gone: the run goes on headless in this process, logging to
RUN_DIR/train.log). Mixed into the app, as RunDisplay is."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from alexnet_tui.engine.events import RunState
from alexnet_tui.headless import EXIT_SIGNAL, LineReporter
from alexnet_tui.ui import terminal
from alexnet_tui.ui.screens import ConfirmQuit

if TYPE_CHECKING:
    from alexnet_tui.ui.app import AlexNetApp

    Base = AlexNetApp
else:
    Base = object


class Leaving(Base):
    async def action_quit(self) -> None:
        """ctrl+q (Textual's own quit key) goes through the same safe path as q."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if not self.state.busy or self.attached is not None:  # an attached screen leaves the run going
            self.shutdown(0)
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.stop_then_quit("quit", 0)

        self.push_screen(ConfirmQuit(), answered)

    def farewell(self) -> str | None:
        """What the terminal shows once the screen is gone: where the run is and how to reach it again."""
        if self.run_dir is None:
            return None
        if self.attached is not None:
            if self.state.busy:
                return f"left {self.run_dir}; the run goes on: alexnet-tui attach {self.run_dir}"
            if self.state == RunState.INTERRUPTED:
                return f"left {self.run_dir} (its process is gone): alexnet-tui --no-ui --resume {self.run_dir}"
            return f"left {self.run_dir} ({self.state}): alexnet-tui watch {self.run_dir}"
        if self.state == RunState.FINISHED:
            return f"run {self.run_dir} finished: alexnet-tui evaluate --checkpoint {self.run_dir}"
        if self.hung_up or self.state == RunState.IDLE:
            return None
        if self.state == RunState.FAILED:
            return f"run {self.run_dir} failed: its log is in the folder; alexnet-tui --resume {self.run_dir}"
        return (
            f"run {self.run_dir} {self.state} and saved: go on with alexnet-tui --resume {self.run_dir} "
            f"(headless: alexnet-tui --no-ui --resume {self.run_dir})"
        )

    def stop_then_quit(self, reason: str, code: int) -> None:
        self.quit_code = code
        self.control.request_stop(reason)
        self.log_line(f"{reason}: stopping the run at the next batch boundary, then quitting...")

    # ---- signals ------------------------------------------------------------------------------
    def on_signal(self, number: int) -> None:
        if number == signal.SIGHUP:
            self.on_hangup()
        else:
            self.on_terminate()

    def on_terminate(self) -> None:
        """SIGTERM (systemctl stop, scancel, kill): stop gracefully, save, exit 143."""
        if self.state.busy and self.attached is None:
            self.stop_then_quit("SIGTERM received", EXIT_SIGNAL[signal.SIGTERM])
        else:
            self.shutdown(EXIT_SIGNAL[signal.SIGTERM])

    def on_hangup(self) -> None:
        """SIGHUP: the terminal is gone (SSH dropped). A run in progress goes on to its end in this
        process, headless, logging to RUN_DIR/train.log beside metrics.jsonl; the screen closes."""
        terminal.detach_from_terminal()
        self.hung_up = True
        if self.state.busy and self.attached is None and self.trainer is not None:
            files = self.run_files
            assert files is not None
            files.keep_text_log()  # still preparing: train.log opens with the run folder
            self.hangup_log = LineReporter(open(os.devnull, "w"), live=False, log=files.write_line)
            self.hangup_log.line(f"the terminal hung up; the run goes on headless (pid {os.getpid()})")
            self.trainer.subscribe(self.hangup_log)
            self.exit(None)  # run_app waits for the engine and returns its exit code
        else:
            self.shutdown(0)

    def shutdown(self, code: int) -> None:
        self.drain_events()
        self.release_engine()
        self.exit(code)

    def release_engine(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
        if self.run_files is not None:
            self.run_files.close()
            self.run_files = None
        if self.hangup_log is not None:
            self.hangup_log.close()
