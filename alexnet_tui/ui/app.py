"""The Textual training console: the same engine as --no-ui, in a thread worker, steered by keys.

The app owns the keys and how the console ends; the run's screen (run_screen.py) owns what is shown,
and LocalRun (local_run.py) the engine trained in this process."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, TabbedContent
from textual.worker import Worker, WorkerState, get_current_worker

from alexnet_tui.config import TrainConfig
from alexnet_tui.download import default_dest
from alexnet_tui.engine import Control, RunState, StoppedBeforeStart
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.follow import CaughtUp, RunFollower
from alexnet_tui.engine.remote import RemoteControl
from alexnet_tui.engine.run_dir import STOP_FILE
from alexnet_tui.errors import UsageError
from alexnet_tui.headless import EXIT_SIGNAL
from alexnet_tui.processes import start_worker_processes
from alexnet_tui.ui import terminal
from alexnet_tui.ui.keys import BINDINGS, Request, available
from alexnet_tui.ui.leaving import farewell
from alexnet_tui.ui.local_run import ENGINE_GROUP, LocalRun, TrainerFactory, real_trainer
from alexnet_tui.ui.run_screen import RunScreen
from alexnet_tui.ui.screens import ConfirmQuit, DownloadOffer, DownloadProgress, HelpScreen
from alexnet_tui.ui.widgets.settings import SettingsForm

if TYPE_CHECKING:
    from alexnet_tui.engine import Trainer


class AlexNetApp(App[int]):
    """One app for the CLI, the screenshots and the tests; `trainer_factory` lets tests script the engine."""

    CSS_PATH = "app.tcss"
    AUTO_FOCUS = None  # single-letter keys must reach the app until the user tabs into a field
    TITLE = "alexnet-tui"
    BINDINGS = BINDINGS

    def __init__(
        self,
        config: TrainConfig,
        trainer_factory: TrainerFactory = real_trainer,
        capture_stderr: bool = False,
        attach: Path | None = None,
        read_only: bool = False,
    ) -> None:
        # Before Textual swaps sys.stderr for its capture object, which these helper processes must
        # not inherit ("bad value(s) in fds_to_keep"); loader workers then come from the fork server.
        if attach is None:  # a screen on another process's run trains nothing here
            start_worker_processes()
        super().__init__()
        self.attached = attach  # a run directory another process is running: follow and steer it
        self.read_only = read_only  # `watch`: follow only (x still leaves a STOP file)
        self.config = config
        # One control contract: the engine's own here, request files for a run attached to.
        self.control: Control | RemoteControl = (
            RemoteControl(attach) if attach is not None and not read_only else Control()
        )
        # The engine's thread (or the follower) appends, the screen drains on a timer: the trainer never
        # waits for the screen.
        pending: deque[ev.Event] = deque()
        self.run_screen = RunScreen(config, pending, attach, read_only, capture_stderr)
        self.engine = LocalRun(self, trainer_factory, self.control, pending)  # type: ignore[arg-type]
        self.quit_code: int | None = None  # set when a quit waits for the run to stop and save
        self.loop: asyncio.AbstractEventLoop | None = None
        self.early_signals: list[int] = []  # arrived before the screen was up; served on mount
        self.new_run_setup = False  # after a finish, s showed the form: the next s starts a new run

    def get_default_screen(self) -> Screen:
        return self.run_screen

    @property
    def state(self) -> RunState:
        """The run's state as the screen shows it (the keys are greyed by it)."""
        return self.run_screen.state

    @state.setter
    def state(self, state: RunState) -> None:
        self.run_screen.state = state

    @property
    def trainer(self) -> Trainer | None:
        return self.engine.trainer

    @property
    def hung_up(self) -> bool:
        return self.engine.hung_up

    def on_mount(self) -> None:
        if self.attached is not None:
            self.follow_metrics(self.attached / "metrics.jsonl")
        elif self.config.resume:
            self.run_screen.show_history(Path(self.config.resume))
        self.loop = asyncio.get_running_loop()
        for number in self.early_signals:
            self.on_signal(number)

    # ---- the engine ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def follow_metrics(self, path: Path) -> None:
        worker = get_current_worker()
        follower = RunFollower(path.parent)
        try:
            while not worker.is_cancelled:
                events = follower.poll()
                self.run_screen.pending.extend(events)
                if not events or isinstance(events[-1], CaughtUp):
                    time.sleep(0.2)
        finally:
            follower.close()

    @on(Worker.StateChanged)
    def worker_changed(self, message: Worker.StateChanged) -> None:
        group, state = message.worker.group, message.state
        if group == "summary" and state == WorkerState.ERROR:
            self.run_screen.log_line(f"model summary failed: {message.worker.error}")
        if group != ENGINE_GROUP or state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self.run_screen.drain_events()
        if state == WorkerState.ERROR:
            self.engine_failed(message.worker.error)
        if self.quit_code is not None:
            self.shutdown(self.quit_code)

    def engine_failed(self, error: BaseException | None) -> None:
        title, severity = "Cannot run", "error"
        if isinstance(error, StoppedBeforeStart):  # the user's own stop: news, not an error
            text = f"stopped before training began ({error}); nothing to save"
            title, severity = "Stopped", "information"
            self.engine.forget()
            self.control.stop_served()  # served: the next start starts
        elif isinstance(error, UsageError):
            text = str(error)
            if self.trainer is not None and not self.engine.prepared:
                self.engine.forget()  # nothing started: fix the settings and press s again
        else:
            text = f"{type(error).__name__}: {error}"
        self.notify(text, title=title, severity=severity, timeout=10, markup=False)
        self.run_screen.log_line(f"error: {text}")
        self.state = RunState.IDLE if self.trainer is None else RunState.FAILED

    # ---- keys ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """None greys a key out in the footer: it does nothing in this state; False hides it."""
        typing = isinstance(self.focused, Input)
        return available(action, self.state, self.attached is not None, self.read_only, typing)

    def action_start(self) -> None:
        if not self.check_action("start", ()):
            return
        finished = self.trainer is not None and self.state == RunState.FINISHED
        if finished and not self.new_run_setup:
            self.new_run_setup = True
            self.run_screen.show_setup()  # the settings of the next run, seen and changeable before it starts
            return
        if self.trainer is None or finished or not self.engine.prepared:
            config = self.settings_or_notify()
            if config is None:
                return
            if finished:
                config.out = None  # a finished run is kept; the next start is a new run
            if config.data == "cats-vs-dogs" and not default_dest().exists():
                self.push_screen(DownloadOffer(), self.download_choice)
                return
            if self.trainer is not None:
                self.run_screen.clear_run_display()  # the new run's rows start on clean tables
            self.new_trainer(config)
        self.new_run_setup = False
        self.run_screen.show_live()
        self.query_one(TabbedContent).active = "train"
        self.state = RunState.TRAINING
        self.engine.start("fit")

    def settings_or_notify(self) -> TrainConfig | None:
        """The form's settings, validated; None (and a notice saying why) when they are wrong."""
        try:
            return self.query_one(SettingsForm).read_config(self.config)
        except UsageError as error:
            self.notify(str(error), title="Check the settings", severity="error", markup=False)
            return None

    def new_trainer(self, config: TrainConfig) -> None:
        self.config = self.run_screen.config = config
        self.engine.new(config)

    def download_choice(self, choice: str | None) -> None:
        if choice == "demo":
            self.query_one(SettingsForm).use_demo()
            self.action_start()
        elif choice == "download":
            from alexnet_tui import download

            self.state = RunState.DOWNLOADING
            self.push_screen(DownloadProgress(download.DEFAULT_URL, default_dest()), self.downloaded)

    def downloaded(self, done: bool | None) -> None:
        self.state = RunState.IDLE
        if done:
            self.run_screen.log_line(f"Cats vs Dogs downloaded to {default_dest()}")
            self.action_start()

    @on(Input.Submitted, "SettingsForm Input")
    def start_from_form(self) -> None:
        self.set_focus(None)
        self.action_start()

    def action_leave_field(self) -> None:
        self.run_screen.focus_scroller(self.query_one(TabbedContent).active)

    def action_leave(self) -> None:
        """q on an attached screen: the screen closes, the run goes on."""
        self.shutdown(0)

    def steer(self, send: Callable[[], None], said: str, request: Request) -> None:
        """Pass a key's request on and say it on the header at once (PAUSING, STOPPING...) until the
        run reaches it; a run attached to that has died is said in one line."""
        try:
            send()
        except UsageError as error:
            self.notify(str(error), title="Not sent", severity="error", markup=False)
            return
        except OSError as error:  # control/ made unwritable since the screen opened
            self.notify(f"cannot leave a request in {self.attached} ({error.strerror})", title="Not sent",
                        severity="error", markup=False)  # fmt: skip
            return
        self.run_screen.log_line(said)
        self.run_screen.request = request
        self.run_screen.update_status()

    def action_pause(self) -> None:
        if self.state == RunState.PAUSED:
            self.steer(self.control.resume, "resuming...", Request.RESUME)
        elif self.state.busy:
            self.steer(self.control.pause, "pausing at the next batch boundary...", Request.PAUSE)

    def action_stop(self) -> None:
        if self.attached is not None and self.read_only:
            if not self.state.busy:
                return
            try:
                (self.attached / STOP_FILE).touch()
            except OSError as error:  # watching another user's run: say so, never end the screen
                self.notify(f"cannot create {self.attached / STOP_FILE} ({error.strerror})", title="Not sent",
                            severity="error", markup=False)  # fmt: skip
                return
            self.run_screen.log_line(
                f"asked the run to stop: created {self.attached / STOP_FILE}; it stops at its next batch"
            )
            self.notify("The run will stop at its next batch and save last.pt.", title="Stop requested")
            return
        if self.state.busy:
            self.steer(
                lambda: self.control.request_stop("x pressed"), "stopping at the next batch boundary...", Request.STOP
            )

    def action_evaluate(self) -> None:
        """While a run trains or pauses: at its next batch boundary, and training goes on.
        Between runs: here and now, on the validation images."""
        if self.check_action("evaluate", ()) is None:
            return
        if self.state.busy:
            self.steer(self.control.request_evaluation, "evaluating at the next batch boundary...", Request.EVALUATE)
            return
        if self.trainer is None:
            config = self.settings_or_notify()
            if config is None:
                return
            self.new_trainer(config)
        self.run_screen.show_live()
        self.state = RunState.EVALUATING
        self.engine.start("evaluate")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """ctrl+p: Textual's own commands (themes, keys, screenshot) and every key of this app
        that does something now, found by its footer words."""
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys"):  # ours: q quits safely, ? is the help
                yield command
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            name = binding.action.split("(")[0]
            if name == "leave_field" or not self.check_action(name, ()):
                continue
            title = f"Show the {binding.description} tab" if name == "show_tab" else binding.description
            key = binding.key_display or binding.key
            yield SystemCommand(title, f"key {key}", partial(self.run_action, binding.action))

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        self.push_screen(HelpScreen(attached=self.attached is not None, read_only=self.read_only))

    # ---- how the console ends: q, ctrl+q, SIGTERM, SIGHUP ----------------------------------------
    async def action_quit(self) -> None:
        """ctrl+q (Textual's own quit key) goes through the same safe path as q."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        """q: asks first while a run is busy (stop, save, quit); an attached screen leaves the run going."""
        if not self.state.busy or self.attached is not None:
            self.shutdown(0)
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.stop_then_quit("quit", 0)

        self.push_screen(ConfirmQuit(), answered)

    def farewell(self) -> str | None:
        return farewell(self.state, self.run_screen.run_dir, self.attached is not None, self.hung_up)

    def stop_then_quit(self, reason: str, code: int) -> None:
        self.quit_code = code
        self.control.request_stop(reason)
        self.run_screen.log_line(f"{reason}: stopping the run at the next batch boundary, then quitting...")

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
        process, headless (LocalRun.go_headless); the screen closes."""
        terminal.detach_from_terminal()
        if self.state.busy and self.attached is None and self.engine.go_headless():
            self.exit(None)  # run_app waits for the engine and returns its exit code
        else:
            self.engine.hung_up = True
            self.shutdown(0)

    def shutdown(self, code: int) -> None:
        self.run_screen.drain_events()
        self.engine.close()
        self.exit(code)
