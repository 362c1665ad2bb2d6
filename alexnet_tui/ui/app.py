"""The Textual training console: the same engine as --no-ui, in a thread worker, steered by keys."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from alexnet_tui.config import TrainConfig
from alexnet_tui.download import default_dest
from alexnet_tui.engine import Control, RunState, StoppedBeforeStart
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.follow import CaughtUp, RunFollower
from alexnet_tui.engine.remote import RemoteControl
from alexnet_tui.engine.run_dir import STOP_FILE
from alexnet_tui.errors import UsageError
from alexnet_tui.headless import LineReporter
from alexnet_tui.metrics import RunFiles
from alexnet_tui.processes import start_worker_processes
from alexnet_tui.ui.leaving import Leaving
from alexnet_tui.ui.model_summary import ModelSummary, guess_classes
from alexnet_tui.ui.run_display import Request, RunDisplay
from alexnet_tui.ui.screens import DownloadOffer, DownloadProgress, HelpScreen
from alexnet_tui.ui.widgets.charts import TrainingCharts
from alexnet_tui.ui.widgets.predict import PredictPane
from alexnet_tui.ui.widgets.reflow_log import ReflowLog
from alexnet_tui.ui.widgets.report import ReportPane
from alexnet_tui.ui.widgets.settings import SettingsForm
from alexnet_tui.ui.widgets.system import SystemPanel
from alexnet_tui.ui.widgets.tables import BatchTable, EpochTable

if TYPE_CHECKING:
    from alexnet_tui.engine import RunOutcome, Trainer

REFRESH_HZ = 10  # the screen follows the engine at most this often, however fast batches come
LOG_LINES = 2000  # the Log tab keeps the newest lines; the whole run is in metrics.jsonl

TrainerFactory = Callable[[TrainConfig, list[ev.Subscriber], Control], "Trainer"]


def real_trainer(config: TrainConfig, subscribers: list[ev.Subscriber], control: Control) -> Trainer:
    """The engine, imported when a run starts here: a screen on another process's run never loads torch."""
    from alexnet_tui.engine.trainer import Trainer

    return Trainer(config, subscribers, control)


class AlexNetApp(RunDisplay, Leaving, App[int]):
    """One app for the CLI, the screenshots and the tests; `trainer_factory` lets tests script the engine."""

    CSS_PATH = "app.tcss"
    AUTO_FOCUS = None  # single-letter keys must reach the app until the user tabs into a field
    TITLE = "alexnet-tui"
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("p", "pause", "Pause/Resume"),
        Binding("x", "stop", "Stop"),
        Binding("e", "evaluate", "Evaluate"),
        Binding("q", "quit_app", "Quit"),
        Binding("q", "leave", "Leave"),  # an attached screen: the run goes on
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape", "leave_field", "Leave field", key_display="esc"),  # shown while a field has focus
        Binding("1", "show_tab('train')", "Train", show=False),
        Binding("2", "show_tab('model')", "Model", show=False),
        Binding("3", "show_tab('charts-tab')", "Charts", show=False),
        Binding("4", "show_tab('predict')", "Predict", show=False),
        Binding("5", "show_tab('report')", "Report", show=False),
        Binding("6", "show_tab('log')", "Log", show=False),
    ]

    state: reactive[RunState] = reactive(RunState.IDLE)  # watch_state refreshes the footer's keys

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
        self.capture_stderr = capture_stderr  # a real terminal run, not a test or a screenshot
        self.attached = attach  # a run directory another process is running: follow and steer it
        self.read_only = read_only  # `watch`: follow only (x still leaves a STOP file)
        self.catching_up = attach is not None  # no toasts for the history read on attach
        self.config = config
        self.trainer_factory = trainer_factory
        # One control contract: the engine's own here, request files for a run attached to.
        self.control: Control | RemoteControl = (
            RemoteControl(attach) if attach is not None and not read_only else Control()
        )
        self.trainer: Trainer | None = None
        self.run_files: RunFiles | None = None  # metrics.jsonl (and TensorBoard) of the run trained here
        # The worker appends, the UI drains on a timer: the trainer never waits for the screen.
        self.pending: deque[ev.Event] = deque()
        self.dataset_text = "data: not loaded yet"
        self.device_text = config.device
        self.run_dir: Path | None = attach
        self.quit_code: int | None = None  # set when a quit waits for the run to stop and save
        self.hung_up = False
        self.hangup_log: LineReporter | None = None
        self.engine_outcome: RunOutcome | None = None
        self.progress_task, self.progress_started = "", 0.0  # the long step on the epoch bar, if any
        self.latest_rate: float | None = None
        self.latest_wait: float | None = None
        self.charts_drawn = 0.0  # monotonic time of the last redraw of the Charts tab
        self.footer_keys: tuple[bool | None, ...] = ()  # what check_action said at the last footer refresh
        self.loop: asyncio.AbstractEventLoop | None = None
        self.early_signals: list[int] = []  # arrived before the screen was up; served on mount
        self.request: Request | None = None  # a key's request the run has not reached yet (STOPPING...)
        self.summary = ModelSummary(self)  # the Model tab's table
        self.new_run_setup = False  # after a finish, s showed the form: the next s starts a new run
        self.latest_batch: ev.BatchEnd | None = None  # where the epoch bar goes back to after a validation
        self.hidden_log: deque[str] = deque(maxlen=LOG_LINES)  # written while the Log tab was hidden

    # ---- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with TabbedContent(initial="train"):
            with TabPane("Train", id="train"):
                with Horizontal(id="setup"):
                    yield SettingsForm(self.config)
                    with ScrollableContainer(id="setup-summary"):
                        yield Static("computing the model summary...", classes="summary", id="side-summary")
                with Vertical(id="live"):
                    yield BatchTable()
                    yield EpochTable()
            with TabPane("Model", id="model"), ScrollableContainer(id="model-scroll"):
                yield Static("computing the model summary...", classes="summary")
            with TabPane("Charts", id="charts-tab"), ScrollableContainer(id="charts-scroll"):
                yield TrainingCharts()
                yield SystemPanel(id="system")
            with TabPane("Predict", id="predict"):
                yield PredictPane()
            with TabPane("Report", id="report"):
                yield ReportPane()
            with TabPane("Log", id="log"):
                yield ReflowLog(id="log-view", max_lines=LOG_LINES)
        with Horizontal(id="progress"):
            yield Label("epoch", classes="progress-label", id="bar-label")
            yield ProgressBar(total=1, id="epoch-progress", show_eta=False)
            yield Label("run", classes="progress-label")
            yield ProgressBar(total=1, id="run-progress", show_eta=False)
            yield Label("", id="eta")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#live").display = False
        self.set_interval(1 / REFRESH_HZ, self.drain_events)
        self.set_interval(1.0, self.update_system)
        self.update_system()
        if self.attached is None:  # attached: the Model tab asks a helper process when first shown
            self.summary.build(self.config, guess_classes(self.config), self.config.image_size)
        if self.attached is not None:
            self.show_live()
            self.query_one(PredictPane).run_dir = self.attached
            self.show_saved_report(self.attached)
            self.follow_metrics(self.attached / "metrics.jsonl")
        elif self.config.resume:
            self.show_history(Path(self.config.resume))
        self.loop = asyncio.get_running_loop()
        for number in self.early_signals:
            self.on_signal(number)
        self.update_status()

    # ---- the engine ---------------------------------------------------------------------------
    def engine_event(self, event: ev.Event) -> None:
        """Called in the worker thread: queue only, never touch widgets here."""
        if not self.hung_up:  # nobody will drain the queue any more
            self.pending.append(event)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_engine(self, task: str) -> None:
        trainer = self.trainer
        assert trainer is not None
        if task == "fit":
            self.engine_outcome = trainer.fit()
        else:
            trainer.evaluate_now("val")

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def follow_metrics(self, path: Path) -> None:
        worker = get_current_worker()
        follower = RunFollower(path.parent)
        try:
            while not worker.is_cancelled:
                events = follower.poll()
                self.pending.extend(events)
                if not events or isinstance(events[-1], CaughtUp):
                    time.sleep(0.2)
        finally:
            follower.close()

    @on(Worker.StateChanged)
    def worker_changed(self, message: Worker.StateChanged) -> None:
        group, state = message.worker.group, message.state
        if group == "summary" and state == WorkerState.ERROR:
            self.log_line(f"model summary failed: {message.worker.error}")
        if group != "engine" or state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self.drain_events()
        if state == WorkerState.ERROR:
            self.engine_failed(message.worker.error)
        if self.quit_code is not None:
            self.shutdown(self.quit_code)

    def engine_failed(self, error: BaseException | None) -> None:
        title, severity = "Cannot run", "error"
        if isinstance(error, StoppedBeforeStart):  # the user's own stop: news, not an error
            text = f"stopped before training began ({error}); nothing to save"
            title, severity = "Stopped", "information"
            self.trainer = None
            self.control.stop_served()  # served: the next start starts
        elif isinstance(error, UsageError):
            text = str(error)
            if self.trainer is not None and not self.trainer.position().prepared:
                self.trainer = None  # nothing started: fix the settings and press s again
        else:
            text = f"{type(error).__name__}: {error}"
        self.notify(text, title=title, severity=severity, timeout=10, markup=False)
        self.log_line(f"error: {text}")
        self.state = RunState.IDLE if self.trainer is None else RunState.FAILED

    # ---- keys ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """None greys a key out in the footer: it does nothing in this state; False hides it."""
        if action == "leave_field":
            return isinstance(self.focused, Input) or False
        if action in ("quit_app", "leave"):
            return (action == "leave") == (self.attached is not None) or False
        if self.attached is not None:
            if action == "start":
                return False  # a screen on another process's run never starts one
            steer = {
                "pause": not self.read_only and self.state.busy,
                "evaluate": not self.read_only and self.state.busy,
                "stop": self.state.busy,  # watch: by a STOP file; nothing to stop once the run is over
            }
            return True if steer.get(action, True) else None
        allowed = {
            "start": not self.state.busy and self.state != RunState.DOWNLOADING,
            "pause": self.state.busy,  # while validating too: it pauses at the next batch
            "stop": self.state.busy,
            "evaluate": self.state != RunState.DOWNLOADING and self.state != RunState.PREPARING,
        }
        return True if allowed.get(action, True) else None

    def action_start(self) -> None:
        if not self.check_action("start", ()):
            return
        finished = self.trainer is not None and self.state == RunState.FINISHED
        if finished and not self.new_run_setup:
            self.show_setup()  # the settings of the next run, seen and changeable before it starts
            return
        if self.trainer is None or finished or not self.trainer.position().prepared:
            config = self.settings_or_notify()
            if config is None:
                return
            if finished:
                config.out = None  # a finished run is kept; the next start is a new run
            if config.data == "cats-vs-dogs" and not default_dest().exists():
                self.push_screen(DownloadOffer(), self.download_choice)
                return
            if self.trainer is not None:
                self.clear_run_display()  # the new run's rows start on clean tables
            self.new_trainer(config)
        self.new_run_setup = False
        self.show_live()
        self.query_one(TabbedContent).active = "train"
        self.state = RunState.TRAINING
        self.run_engine("fit")

    def settings_or_notify(self) -> TrainConfig | None:
        """The form's settings, validated; None (and a notice saying why) when they are wrong."""
        try:
            return self.query_one(SettingsForm).read_config(self.config)
        except UsageError as error:
            self.notify(str(error), title="Check the settings", severity="error", markup=False)
            return None

    def new_trainer(self, config: TrainConfig) -> None:
        if self.trainer is not None:
            self.trainer.close()  # loader workers and the old run directory's lock
        if self.run_files is not None:
            self.run_files.close()
            self.run_files = None
        self.config = config
        self.run_files = RunFiles()  # written from when the trainer names its folder
        self.trainer = self.trainer_factory(config, [self.engine_event, self.run_files], self.control)

    def show_live(self) -> None:
        """The tables replace the settings form once a run or an evaluation starts."""
        self.query_one("#setup").display = False
        self.query_one("#live").display = True

    def show_setup(self) -> None:
        """After a finish: the form again, holding the last run's settings, for the next run."""
        self.new_run_setup = True
        self.query_one(TabbedContent).active = "train"
        self.query_one("#live").display = False
        self.query_one("#setup").display = True
        self.query_one(SettingsForm).show_hint("A new run: set what you like,\nthen s (or enter) starts it.")
        self.set_focus(None)

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
            self.log_line(f"Cats vs Dogs downloaded to {default_dest()}")
            self.action_start()

    @on(Input.Submitted, "SettingsForm Input")
    def start_from_form(self) -> None:
        self.set_focus(None)
        self.action_start()

    def action_leave_field(self) -> None:
        self.focus_scroller(self.query_one(TabbedContent).active)

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
        self.log_line(said)
        self.request = request
        self.update_status()

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
            self.log_line(f"asked the run to stop: created {self.attached / STOP_FILE}; it stops at its next batch")
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
        self.show_live()
        self.state = RunState.EVALUATING
        self.run_engine("evaluate")

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
