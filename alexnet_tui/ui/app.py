"""The Textual training console: the same engine as --no-ui, in a thread worker, steered by keys."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.reactive import reactive
from textual.widgets import Footer, Input, Label, ProgressBar, RichLog, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from alexnet_tui.config import TrainConfig
from alexnet_tui.download import default_dest
from alexnet_tui.engine import Control, RunOutcome, RunState, StoppedBeforeStart, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.follow import CaughtUp, FollowReset, MetricsFollower
from alexnet_tui.engine.remote import RemoteControl
from alexnet_tui.engine.run_dir import STOP_FILE
from alexnet_tui.errors import UsageError
from alexnet_tui.headless import EXIT_SIGNAL, LineReporter, format_epoch
from alexnet_tui.metrics import MetricsWriter
from alexnet_tui.processes import start_worker_processes
from alexnet_tui.ui import terminal
from alexnet_tui.ui.screens import ConfirmQuit, DownloadOffer, HelpScreen
from alexnet_tui.ui.widgets.charts import SystemPanel, TrainingCharts
from alexnet_tui.ui.widgets.predict import PredictPane
from alexnet_tui.ui.widgets.settings import SettingsForm
from alexnet_tui.ui.widgets.tables import BatchTable, EpochTable

REFRESH_HZ = 10  # the screen follows the engine at most this often, however fast batches come

TrainerFactory = Callable[[TrainConfig, list[ev.Subscriber], Control], Trainer]


def guess_classes(config: TrainConfig) -> int:
    """The class count for the summary shown before the data is read."""
    if config.num_classes:
        return config.num_classes
    return 3 if config.data == "demo" else 2


class AlexNetApp(App[int]):
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
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape", "leave_field", "Leave field", show=False),
        Binding("1", "show_tab('train')", "Train", show=False),
        Binding("2", "show_tab('model')", "Model", show=False),
        Binding("3", "show_tab('charts-tab')", "Charts", show=False),
        Binding("4", "show_tab('predict')", "Predict", show=False),
        Binding("5", "show_tab('log')", "Log", show=False),
    ]

    state: reactive[RunState] = reactive(RunState.IDLE, bindings=True)

    def __init__(
        self,
        config: TrainConfig,
        trainer_factory: TrainerFactory = Trainer,
        capture_stderr: bool = False,
        attach: Path | None = None,
        read_only: bool = False,
    ) -> None:
        # Before Textual swaps sys.stderr for its capture object, which these helper processes must
        # not inherit ("bad value(s) in fds_to_keep"); loader workers then come from the fork server.
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
        self.metrics: MetricsWriter | None = None
        # The worker appends, the UI drains on a timer: the trainer never waits for the screen.
        self.pending: deque[ev.Event] = deque()
        self.dataset_text = "data: not loaded yet"
        self.device_text = config.device
        self.run_dir: Path | None = attach
        self.quit_code: int | None = None  # set when a quit waits for the run to stop and save
        self.hung_up = False
        self.hangup_log: LineReporter | None = None
        self.engine_outcome: RunOutcome | None = None
        self.download_progress: tuple[int, int | None] = (0, None)
        self.latest_rate: float | None = None
        self.latest_wait: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.early_signals: list[int] = []  # arrived before the screen was up; served on mount

    # ---- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with TabbedContent(initial="train"):
            with TabPane("Train", id="train"):
                with Horizontal(id="setup"):
                    yield SettingsForm(self.config)
                    with ScrollableContainer(id="setup-summary"):
                        yield Static("computing the model summary...", classes="summary")
                with Vertical(id="live"):
                    yield BatchTable()
                    yield EpochTable()
            with TabPane("Model", id="model"), ScrollableContainer():
                yield Static("computing the model summary...", classes="summary")
            with TabPane("Charts", id="charts-tab"), ScrollableContainer():
                yield TrainingCharts()
                yield SystemPanel(id="system")
            with TabPane("Predict", id="predict"):
                yield PredictPane()
            with TabPane("Log", id="log"):
                yield RichLog(id="log-view", wrap=True, markup=False, max_lines=2000)
        with Horizontal(id="progress"):
            yield Label("epoch", classes="progress-label")
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
        self.compute_summary(guess_classes(self.config), self.config.image_size)
        if self.attached is not None:
            self.show_live()
            self.query_one(PredictPane).run_dir = self.attached
            self.follow_metrics(self.attached / "metrics.jsonl")
        self.loop = asyncio.get_running_loop()
        for number in self.early_signals:
            self.on_signal(number)
        self.update_status()

    # ---- model summary ------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="summary", exit_on_error=False)
    def compute_summary(self, num_classes: int, image_size: int) -> None:
        from alexnet_tui.model import AlexNet, summary_text

        text = summary_text(AlexNet(num_classes, image_size, self.config.width))
        self.call_from_thread(self.show_summary, text)  # once per run, not per batch

    def show_summary(self, text: str) -> None:
        for widget in self.query(".summary").results(Static):
            widget.update(text.rstrip())

    # ---- the engine ---------------------------------------------------------------------------
    def engine_event(self, event: ev.Event) -> None:
        """Called in the worker thread: queue only, never touch widgets here."""
        if not self.hung_up:  # nobody will drain the queue any more
            self.pending.append(event)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_engine(self, task: str) -> None:
        trainer = self.trainer
        assert trainer is not None
        if not trainer.position().prepared:
            trainer.prepare()
            run_dir = trainer.position().run_dir
            assert run_dir is not None
            self.metrics = MetricsWriter(run_dir / "metrics.jsonl")
            trainer.subscribe(self.metrics)
        if task == "fit":
            self.engine_outcome = trainer.fit()
        else:
            trainer.evaluate_now("val")

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def follow_metrics(self, path: Path) -> None:
        worker = get_current_worker()
        follower = MetricsFollower(path)
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
        if group == "download" and state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self.downloaded(message.worker)
        if group != "engine" or state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self.drain_events()
        if state == WorkerState.ERROR:
            self.engine_failed(message.worker.error)
        if self.quit_code is not None:
            self.shutdown(self.quit_code)

    def engine_failed(self, error: BaseException | None) -> None:
        if isinstance(error, StoppedBeforeStart):
            text = f"stopped before training began ({error}); nothing to save"
            self.trainer = None
        elif isinstance(error, UsageError):
            text = str(error)
            if self.trainer is not None and not self.trainer.position().prepared:
                self.trainer = None  # nothing started: fix the settings and press s again
        else:
            text = f"{type(error).__name__}: {error}"
        self.notify(text, title="Cannot run", severity="error", timeout=10, markup=False)
        self.log_line(f"error: {text}")
        self.state = RunState.IDLE if self.trainer is None else RunState.FAILED

    def drain_events(self) -> None:
        """Apply what the engine reported since the last tick, in order, at most REFRESH_HZ a second."""
        batch_rows: list[ev.BatchEnd] = []
        while self.pending:
            event = self.pending.popleft()
            if isinstance(event, ev.BatchEnd):
                batch_rows.append(event)
                continue
            self.add_batch_rows(batch_rows)
            batch_rows = []
            self.apply(event)
        self.add_batch_rows(batch_rows)

    def add_batch_rows(self, rows: list[ev.BatchEnd]) -> None:
        if not rows:
            return
        self.query_one(BatchTable).add_batches(rows)
        self.query_one(TrainingCharts).add_batches(rows)
        last = rows[-1]
        self.latest_rate, self.latest_wait = last.images_per_sec, last.data_wait_share
        self.query_one("#epoch-progress", ProgressBar).update(total=last.batches, progress=last.batch)
        done = (last.epoch - 1) * last.batches + last.batch
        self.query_one("#run-progress", ProgressBar).update(total=last.epochs * last.batches, progress=done)
        if last.seconds_left is not None:
            minutes, seconds = divmod(int(last.seconds_left), 60)
            self.query_one("#eta", Label).update(f"ETA {minutes}:{seconds:02d}")

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, CaughtUp):
            self.catching_up = False
        elif isinstance(event, FollowReset):
            self.query_one(BatchTable).clear()
            self.query_one(EpochTable).reset()
            self.log_line("metrics.jsonl was truncated or replaced: reading it again from the start")
        elif isinstance(event, ev.StateChanged):
            self.state = event.state
        elif isinstance(event, ev.RunStarted):
            self.run_started(event)
        elif isinstance(event, ev.BestCheckpoint):
            self.notify(f"{event.message}\n{event.path}", title="New best checkpoint", timeout=6, markup=False)
            self.log_line(f"[INFO] {event.message} -> {event.path}")
        elif isinstance(event, ev.EpochEnd):
            self.query_one(EpochTable).add_epoch(event)
            self.query_one(TrainingCharts).add_epoch(event)
            self.log_line(format_epoch(event))
        elif isinstance(event, ev.EvaluationEnd) and (event.requested or event.checkpoint):
            self.query_one(EpochTable).add_evaluation(event)
            self.log_line(f"{event.split} loss: {event.loss:.5f}, {event.split} accuracy: {event.acc:.5f}")
        elif isinstance(event, ev.Stopped):
            self.log_line(f"stopped at epoch {event.epoch:02d}, batch {event.batch}; saved {event.last_checkpoint}")
            self.notify(f"Saved {event.last_checkpoint}. Press s to go on.", title="Stopped", markup=False)
        elif isinstance(event, ev.Finished):
            self.log_line(f"finished in {event.seconds:.1f} s; test accuracy {event.test_acc:.5f}")
            self.notify(f"test accuracy {event.test_acc:.5f}", title="Finished", markup=False)
        elif isinstance(event, ev.Failed):
            self.log_line(f"training failed: {event.message}")
            self.notify(event.message, title="Training failed", severity="error", timeout=10, markup=False)
        elif isinstance(event, ev.ControlAck):
            self.log_line(f"{event.command} requested by {event.sender}")
            self.notify(f"{event.command} requested by {event.sender}", title="Request taken", markup=False)
        elif isinstance(event, ev.Notice):
            self.log_line(event.message)
        self.update_status()

    def run_started(self, event: ev.RunStarted) -> None:
        data = event.dataset
        self.dataset_text = (
            f"{data['name']}: {len(data['class_names'])} classes, "
            f"{data['train']}/{data['val']}/{data['test']} train/val/test, {data['skipped']} skipped"
        )
        self.device_text = f"{event.device} {event.amp if event.amp != 'off' else 'fp32'}"
        if self.attached is None:
            self.run_dir = Path(event.run_dir)
            self.query_one(PredictPane).run_dir = self.run_dir
        if self.capture_stderr:
            terminal.redirect_stderr(Path(event.run_dir) / "stderr.log")
        self.log_line(f"run directory: {event.run_dir} (device {event.device}, data {self.dataset_text})")
        if len(data["class_names"]) != guess_classes(self.config) and not self.config.num_classes:
            self.compute_summary(len(data["class_names"]), self.config.image_size)

    def notify(self, message: str, **options: Any) -> None:
        if not self.catching_up:
            super().notify(message, **options)

    def update_system(self) -> None:
        device = self.device_text.split()[0] if self.run_dir is not None else self.config.device
        self.query_one(SystemPanel).show(device, self.latest_rate, self.latest_wait)

    def log_line(self, text: str) -> None:
        self.query_one("#log-view", RichLog).write(text)

    def update_status(self) -> None:
        mode = ""
        if self.attached is not None:
            mode = " (watching)" if self.read_only else " (attached)"
        where = str(self.run_dir or "run: not started")
        self.query_one("#status", Static).update(
            f"[b]{self.state.upper()}[/b]{mode} | {self.device_text} | {self.dataset_text} | {where}"
        )

    def watch_state(self, state: RunState) -> None:
        if self.is_mounted:
            self.update_status()

    # ---- keys ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """None greys a key out in the footer: it does nothing in this state."""
        if self.attached is not None:
            steer = {
                "start": False,
                "pause": not self.read_only and self.state in (RunState.TRAINING, RunState.PAUSED),
                "evaluate": not self.read_only and self.state.busy,
                "stop": self.state.busy or self.read_only,
            }
            return True if steer.get(action, True) else None
        allowed = {
            "start": not self.state.busy and self.state != RunState.DOWNLOADING,
            "pause": self.state in (RunState.TRAINING, RunState.PAUSED),
            "stop": self.state.busy,
            "evaluate": self.state != RunState.DOWNLOADING and self.state != RunState.PREPARING,
        }
        return True if allowed.get(action, True) else None

    def action_start(self) -> None:
        if self.check_action("start", ()) is None:
            return
        if self.trainer is None or self.state == RunState.FINISHED or not self.trainer.position().prepared:
            config = self.settings_or_notify()
            if config is None:
                return
            if self.trainer is not None and self.state == RunState.FINISHED:
                config.out = None  # a finished run is kept; the next start is a new run
            if config.data == "cats-vs-dogs" and not default_dest().exists():
                self.push_screen(DownloadOffer(), self.download_choice)
                return
            self.new_trainer(config)
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
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.config = config
        self.trainer = self.trainer_factory(config, [self.engine_event], self.control)

    def show_live(self) -> None:
        """The tables replace the settings form once a run or an evaluation starts."""
        self.query_one("#setup").display = False
        self.query_one("#live").display = True

    def download_choice(self, choice: str | None) -> None:
        if choice == "demo":
            self.query_one("#field-data", Input).value = "demo"
            self.action_start()
        elif choice == "download":
            self.state = RunState.DOWNLOADING
            self.download_progress = (0, None)
            self.download_timer = self.set_interval(1 / REFRESH_HZ, self.show_download_progress)
            self.download_dataset()

    @work(thread=True, exclusive=True, group="download", exit_on_error=False)
    def download_dataset(self) -> None:
        from alexnet_tui import download

        def report(done: int, total: int | None) -> None:
            self.download_progress = (done, total)  # read by a UI timer, never drawn from here

        download.install_dataset(download.DEFAULT_URL, default_dest(), report)

    def show_download_progress(self) -> None:
        done, total = self.download_progress
        self.query_one("#epoch-progress", ProgressBar).update(total=total or done or 1, progress=done)
        self.query_one("#eta", Label).update(f"{done / 1e6:.0f} MB")

    def downloaded(self, worker: Worker) -> None:
        self.download_timer.stop()
        self.state = RunState.IDLE
        if worker.state == WorkerState.ERROR:
            self.notify(str(worker.error), title="Download failed", severity="error", markup=False)
        else:
            self.log_line(f"Cats vs Dogs downloaded to {default_dest()}")
            self.action_start()

    @on(Input.Submitted, "SettingsForm Input")
    def start_from_form(self) -> None:
        self.set_focus(None)
        self.action_start()

    def action_leave_field(self) -> None:
        self.set_focus(None)

    def steer(self, request: Callable[[], None], said: str) -> None:
        """Pass a key's request on; a run attached to that has died is said in one line."""
        try:
            request()
        except UsageError as error:
            self.notify(str(error), title="Not sent", severity="error", markup=False)
            return
        self.log_line(said)

    def action_pause(self) -> None:
        if self.state == RunState.TRAINING:
            self.steer(self.control.pause, "pausing at the next batch boundary...")
        elif self.state == RunState.PAUSED:
            self.steer(self.control.resume, "resuming...")

    def action_stop(self) -> None:
        if self.attached is not None and self.read_only:
            (self.attached / STOP_FILE).touch()
            self.log_line(f"asked the run to stop: created {self.attached / STOP_FILE}; it stops at its next batch")
            self.notify("The run will stop at its next batch and save last.pt.", title="Stop requested")
            return
        if self.state.busy:
            self.steer(lambda: self.control.request_stop("x pressed"), "stopping at the next batch boundary...")

    def action_evaluate(self) -> None:
        """While a run trains or pauses: at its next batch boundary, and training goes on.
        Between runs: here and now, on the validation images."""
        if self.check_action("evaluate", ()) is None:
            return
        if self.state.busy:
            self.steer(self.control.request_evaluation, "evaluating at the next batch boundary...")
            return
        if self.trainer is None:
            config = self.settings_or_notify()
            if config is None:
                return
            self.new_trainer(config)
        self.show_live()
        self.state = RunState.EVALUATING
        self.run_engine("evaluate")

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

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
        run_dir = self.trainer.position().run_dir if self.trainer is not None else None
        if self.state.busy and self.attached is None and self.trainer is not None and run_dir is not None:
            self.hangup_log = LineReporter(open(os.devnull, "w"), live=False)
            self.hangup_log.open_log(run_dir)
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
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.hangup_log is not None:
            self.hangup_log.close()
