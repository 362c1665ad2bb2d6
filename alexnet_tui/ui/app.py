"""The Textual training console: the same engine as --no-ui, in a thread worker, steered by keys."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, Input, Label, ProgressBar, RichLog, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from alexnet_tui.config import TrainConfig
from alexnet_tui.download import default_dest
from alexnet_tui.engine import Control, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.trainer import STOP_FILE
from alexnet_tui.errors import UsageError
from alexnet_tui.headless import format_epoch
from alexnet_tui.metrics import MetricsWriter
from alexnet_tui.paths import cache_dir
from alexnet_tui.ui.screens import ConfirmQuit, DownloadOffer, HelpScreen
from alexnet_tui.ui.widgets.charts import SystemPanel, TrainingCharts
from alexnet_tui.ui.widgets.settings import SettingsForm

REFRESH_HZ = 10  # the screen follows the engine at most this often, however fast batches come
MAX_BATCH_ROWS = 200  # older rows leave the table; every batch stays in metrics.jsonl
BUSY = ("training", "paused", "evaluating")

TrainerFactory = Callable[[TrainConfig, list[ev.Subscriber], Control], Trainer]


class CaughtUp(ev.Event):
    """The follower has read the file's history; later events are live."""


class FollowReset(ev.Event):
    """The followed file was truncated or replaced."""


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

    state: reactive[str] = reactive("idle", bindings=True)

    def __init__(
        self,
        config: TrainConfig,
        trainer_factory: TrainerFactory = Trainer,
        capture_stderr: bool = False,
        watch: Path | None = None,
    ) -> None:
        start_helper_processes()
        super().__init__()
        self.capture_stderr = capture_stderr
        self.watch = watch  # a run directory to follow read-only, instead of training here
        self.catching_up = watch is not None  # no toasts for the history read on attach
        self.config = config
        self.trainer_factory = trainer_factory
        self.control = Control()
        self.trainer: Trainer | None = None
        self.metrics: MetricsWriter | None = None
        # The worker appends, the UI drains on a timer: the trainer never waits for the screen.
        self.pending: deque[ev.Event] = deque()
        self.dataset_text = "data: not loaded yet"
        self.device_text = config.device
        self.run_dir_text = "run: not started"
        self.quitting = False
        self.best_row: str | None = None
        self.download_progress: tuple[int, int | None] = (0, None)
        self.latest_rate: float | None = None
        self.latest_wait: float | None = None

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
                    yield DataTable(id="batches", cursor_type="none", zebra_stripes=True)
                    yield DataTable(id="epochs", cursor_type="none")
            with TabPane("Model", id="model"), ScrollableContainer():
                yield Static("computing the model summary...", classes="summary")
            with TabPane("Charts", id="charts-tab"), ScrollableContainer():
                yield TrainingCharts()
                yield SystemPanel(id="system")
            with TabPane("Predict", id="predict"), Vertical(id="predict-view"):
                yield Label("image path (enter to predict with the run's best.pt):")
                yield Input(placeholder="path/to/image.jpg", id="predict-path", compact=True)
                yield RichLog(id="predict-results", wrap=True, markup=False, max_lines=200)
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
        batches = self.query_one("#batches", DataTable)
        batches.add_columns("epoch", "batch", "loss", "acc", "run loss", "run acc", "img/s")
        epochs = self.query_one("#epochs", DataTable)
        for column in ("epoch", "loss", "acc", "val_loss", "val_acc", "img/s", "sec", "best"):
            epochs.add_column(column, key=column)
        self.query_one("#live").display = False
        self.set_interval(1 / REFRESH_HZ, self.drain_events)
        self.set_interval(1.0, self.update_system)
        self.update_system()
        self.compute_summary(guess_classes(self.config), self.config.image_size)
        if self.watch is not None:
            self.show_live()
            self.run_dir_text = f"watching {self.watch}"
            self.follow_metrics(self.watch / "metrics.jsonl")
        self.update_status()

    # ---- model summary ------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="summary", exit_on_error=False)
    def compute_summary(self, num_classes: int, image_size: int) -> None:
        from alexnet_tui.model import AlexNet, summary_text

        text = summary_text(AlexNet(num_classes, image_size))
        self.call_from_thread(self.show_summary, text)  # once per run, not per batch

    def show_summary(self, text: str) -> None:
        for widget in self.query(".summary").results(Static):
            widget.update(text.rstrip())

    # ---- the engine ---------------------------------------------------------------------------
    def engine_event(self, event: ev.Event) -> None:
        """Called in the worker thread: queue only, never touch widgets here."""
        self.pending.append(event)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_engine(self, task: str) -> None:
        trainer = self.trainer
        assert trainer is not None
        if not trainer.prepared:
            trainer.prepare()
            assert trainer.run_dir is not None
            self.metrics = MetricsWriter(trainer.run_dir / "metrics.jsonl")
            trainer.subscribe(self.metrics)
        if task == "fit":
            trainer.fit()
        else:
            self.control.reset()
            if trainer.evaluate("val", requested=True) is not None:
                trainer.write_report("val")
            trainer.emit(ev.StateChanged("stopped" if trainer.epoch > 1 or trainer.batch else "idle"))

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def follow_metrics(self, path: Path) -> None:
        """tail -f for metrics.jsonl: whole lines only; a truncated or replaced file is read again."""
        worker = get_current_worker()
        handle = None
        inode = None
        partial = ""
        try:
            while not worker.is_cancelled:
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    time.sleep(0.25)
                    continue
                if handle is None or stat.st_ino != inode or stat.st_size < handle.tell():
                    if handle is not None:
                        handle.close()
                        self.pending.append(FollowReset())
                    handle = open(path, encoding="utf-8", errors="replace")
                    inode, partial = stat.st_ino, ""
                chunk = handle.read()
                if not chunk:
                    if self.catching_up:
                        self.pending.append(CaughtUp())
                    time.sleep(0.2)
                    continue
                *lines, partial = (partial + chunk).split("\n")
                for line in lines:
                    try:
                        event = ev.from_json(json.loads(line))
                    except ValueError:
                        continue
                    if event is not None:
                        self.pending.append(event)
        finally:
            if handle is not None:
                handle.close()

    @on(Worker.StateChanged)
    def worker_changed(self, message: Worker.StateChanged) -> None:
        if message.worker.group == "summary" and message.state == WorkerState.ERROR:
            self.log_line(f"model summary failed: {message.worker.error}")
        if message.worker.group == "download" and message.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self.download_timer.stop()
            self.state = "idle"
            if message.state == WorkerState.ERROR:
                self.notify(str(message.worker.error), title="Download failed", severity="error", markup=False)
            else:
                self.log_line(f"Cats vs Dogs downloaded to {default_dest()}")
                self.action_start()
        if message.worker.group != "engine":
            return
        if message.state == WorkerState.ERROR:
            self.drain_events()
            error = message.worker.error
            if isinstance(error, UsageError):
                text = str(error)
                if self.trainer is not None and not self.trainer.prepared:
                    self.trainer = None  # nothing started: fix the settings and press s again
            else:
                text = f"{type(error).__name__}: {error}"
            self.notify(text, title="Cannot run", severity="error", timeout=10, markup=False)
            self.log_line(f"error: {text}")
            self.state = "idle" if self.trainer is None else "failed"
        if message.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.drain_events()
            if self.quitting:
                self.shutdown()

    def drain_events(self) -> None:
        """Apply what the engine reported since the last tick, in order, at most REFRESH_HZ a second."""
        if not self.pending:
            return
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
        table = self.query_one("#batches", DataTable)
        for row in rows[-MAX_BATCH_ROWS:]:
            table.add_row(
                f"{row.epoch}/{row.epochs}",
                f"{row.batch}/{row.batches}",
                f"{row.loss:.5f}",
                f"{row.acc:.5f}",
                f"{row.running_loss:.5f}",
                f"{row.running_acc:.5f}",
                f"{row.images_per_sec:.1f}",
            )
        while table.row_count > MAX_BATCH_ROWS:
            table.remove_row(next(iter(table.rows)))
        # After the refresh: the new rows must be in the virtual size before scrolling to them.
        self.call_after_refresh(table.scroll_end, animate=False)
        self.query_one(TrainingCharts).add_batches(rows)
        last = rows[-1]
        self.latest_rate, self.latest_wait = last.images_per_sec, last.data_wait_share
        self.query_one("#epoch-progress", ProgressBar).update(total=last.batches, progress=last.batch)
        done = (last.epoch - 1) * last.batches + last.batch
        total = last.epochs * last.batches
        self.query_one("#run-progress", ProgressBar).update(total=total, progress=done)
        images_per_batch = self.config.batch_size
        seconds = (total - done) * images_per_batch / max(last.images_per_sec, 1e-9)
        minutes, secs = divmod(int(seconds), 60)
        self.query_one("#eta", Label).update(f"ETA {minutes}:{secs:02d}")

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, CaughtUp):
            self.catching_up = False
        elif isinstance(event, FollowReset):
            self.query_one("#batches", DataTable).clear()
            self.query_one("#epochs", DataTable).clear()
            self.best_row = None
            self.log_line("metrics.jsonl was truncated or replaced: reading it again from the start")
        elif isinstance(event, ev.StateChanged):
            self.state = event.state
        elif isinstance(event, ev.RunStarted):
            data = event.dataset
            self.dataset_text = (
                f"{data['name']}: {len(data['class_names'])} classes, "
                f"{data['train']}/{data['val']}/{data['test']} train/val/test, {data['skipped']} skipped"
            )
            self.device_text = f"{event.device} {event.amp if event.amp != 'off' else 'fp32'}"
            self.run_dir_text = event.run_dir if self.watch is None else f"watching {self.watch}"
            if self.capture_stderr:
                redirect_stderr(Path(event.run_dir) / "stderr.log")
            self.log_line(f"run directory: {event.run_dir} (device {event.device}, data {self.dataset_text})")
            if len(data["class_names"]) != guess_classes(self.config) and not self.config.num_classes:
                self.compute_summary(len(data["class_names"]), self.config.image_size)
        elif isinstance(event, ev.BestCheckpoint):
            self.notify(f"{event.message}\n{event.path}", title="New best checkpoint", timeout=6, markup=False)
            self.log_line(f"[INFO] {event.message} -> {event.path}")
        elif isinstance(event, ev.EpochEnd):
            self.add_epoch_row(event)
            self.query_one(TrainingCharts).add_epoch(event)
            self.log_line(format_epoch(event))
        elif isinstance(event, ev.EvaluationEnd) and (event.requested or event.checkpoint):
            label = event.split if event.checkpoint else "eval"
            table = self.query_one("#epochs", DataTable)
            table.add_row(label, "", "", f"{event.loss:.5f}", f"{event.acc:.5f}", "", "", "")
            # After the refresh: the new rows must be in the virtual size before scrolling to them.
            self.call_after_refresh(table.scroll_end, animate=False)
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
        elif isinstance(event, ev.Notice):
            self.log_line(event.message)
        self.update_status()

    def notify(self, message: str, **options: Any) -> None:
        if not self.catching_up:
            super().notify(message, **options)

    def add_epoch_row(self, event: ev.EpochEnd) -> None:
        table = self.query_one("#epochs", DataTable)
        if event.best and self.best_row is not None:
            table.update_cell(self.best_row, "best", "")
        key = f"epoch-{event.epoch}-{table.row_count}"
        table.add_row(
            f"{event.epoch}",
            f"{event.train_loss:.5f}",
            f"{event.train_acc:.5f}",
            f"{event.val_loss:.5f}",
            f"{event.val_acc:.5f}",
            f"{event.images_per_sec:.1f}",
            f"{event.seconds:.1f}",
            "*" if event.best else "",
            key=key,
        )
        if event.best:
            self.best_row = key
        # After the refresh: the new rows must be in the virtual size before scrolling to them.
        self.call_after_refresh(table.scroll_end, animate=False)

    def update_system(self) -> None:
        device = self.device_text.split()[0] if self.run_dir_text != "run: not started" else self.config.device
        self.query_one(SystemPanel).show(device, self.latest_rate, self.latest_wait)

    def log_line(self, text: str) -> None:
        self.query_one("#log-view", RichLog).write(text)

    def update_status(self) -> None:
        watching = " (watching)" if self.watch else ""
        self.query_one("#status", Static).update(
            f"[b]{self.state.upper()}[/b]{watching} | {self.device_text} | {self.dataset_text} | {self.run_dir_text}"
        )

    def watch_state(self, state: str) -> None:
        if self.is_mounted:
            self.update_status()

    # ---- keys ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """None greys a key out in the footer: it does nothing in this state."""
        if self.watch is not None:
            return True if action not in ("start", "pause", "evaluate") else None
        allowed = {
            "start": self.state not in (*BUSY, "downloading"),
            "pause": self.state in ("training", "paused"),
            "stop": self.state in BUSY,
            "evaluate": self.state in ("idle", "paused", "stopped", "finished", "failed"),
        }
        return True if allowed.get(action, True) else None

    def action_start(self) -> None:
        if self.state in (*BUSY, "downloading") or self.watch is not None:
            return
        if self.trainer is None or self.state == "finished" or not self.trainer.prepared:
            config = self.settings_or_notify()
            if config is None:
                return
            if self.trainer is not None and self.state == "finished":
                config.out = None  # a finished run is kept; the next start is a new run
            if config.data == "cats-vs-dogs" and not default_dest().exists():
                self.push_screen(DownloadOffer(), self.download_choice)
                return
            self.new_trainer(config)
        self.show_live()
        self.query_one(TabbedContent).active = "train"
        self.state = "training"
        self.run_engine("fit")

    def settings_or_notify(self) -> TrainConfig | None:
        """The form's settings, validated; None (and a notice saying why) when they are wrong."""
        try:
            return self.query_one(SettingsForm).read_config(self.config)
        except UsageError as error:
            self.notify(str(error), title="Check the settings", severity="error", markup=False)
            return None

    def new_trainer(self, config: TrainConfig) -> None:
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
            self.state = "downloading"
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

    @on(Input.Submitted, "#predict-path")
    def predict_path(self, message: Input.Submitted) -> None:
        path = message.value.strip()
        if path:
            self.predict(path)

    @work(thread=True, group="predict", exit_on_error=False)
    def predict(self, image: str) -> None:
        """A fresh model from best.pt on the CPU: the training worker keeps the live model to itself."""
        from alexnet_tui.engine.checkpoint import load_checkpoint
        from alexnet_tui.inference import model_from_checkpoint, predict_image

        best = (self.watch or Path(self.run_dir_text)) / "best.pt"
        if not best.exists():
            line = "no best.pt yet: train at least one epoch (or watch a run that has one)"
        else:
            payload = load_checkpoint(best)
            device = torch.device("cpu")
            line, _ = predict_image(model_from_checkpoint(payload, device), payload, image, 3, device)
        self.call_from_thread(self.query_one("#predict-results", RichLog).write, line)

    @on(Input.Submitted, "SettingsForm Input")
    def start_from_form(self) -> None:
        self.set_focus(None)
        self.action_start()

    def action_leave_field(self) -> None:
        self.set_focus(None)

    def action_pause(self) -> None:
        if self.state == "training":
            self.control.pause()
        elif self.state == "paused":
            self.control.resume()

    def action_stop(self) -> None:
        if self.watch is not None:
            (self.watch / STOP_FILE).touch()
            self.log_line(f"asked the run to stop: created {self.watch / STOP_FILE}; it stops at its next batch")
            self.notify("The run will stop at its next batch and save last.pt.", title="Stop requested")
            return
        if self.state in BUSY:
            self.control.request_stop("x pressed")
            self.log_line("stopping at the next batch boundary...")

    def action_evaluate(self) -> None:
        if self.watch is not None:
            return
        if self.state == "paused":
            self.control.request_evaluation()
            return
        if self.state in BUSY:
            return
        if self.trainer is None:
            config = self.settings_or_notify()
            if config is None:
                return
            self.new_trainer(config)
        self.show_live()
        self.state = "evaluating"
        self.run_engine("evaluate")

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """ctrl+q (Textual's own quit key) goes through the same safe path as q."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if self.state not in BUSY or self.watch is not None:
            self.shutdown()
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.quitting = True
                self.control.request_stop("quit")
                self.log_line("quitting: stopping the run at the next batch boundary...")

        self.push_screen(ConfirmQuit(), answered)

    def shutdown(self) -> None:
        self.drain_events()
        if self.trainer is not None:
            self.trainer.close()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.exit(0)


def start_helper_processes() -> None:
    """Start multiprocessing's resource tracker and fork server before Textual swaps sys.stderr
    for its capture object: started later, they pass sys.stderr.fileno() to the child and fail
    with "bad value(s) in fds_to_keep". Loader workers then come from the fork server, not from
    a fork of this multithreaded process."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    forkserver.ensure_running()


_saved_stderr: int | None = None


def redirect_stderr(path: Path) -> None:
    """C libraries (libjpeg, CUDA) and loader workers write to fd 2 directly, under Textual's
    Python-level capture: send fd 2 to a file so they cannot scribble over the screen.
    Textual draws on sys.__stderr__, so that first moves to a duplicate of the terminal's fd."""
    global _saved_stderr
    path.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if _saved_stderr is None:
        _saved_stderr = os.dup(2)
        terminal = os.fdopen(os.dup(2), "w", encoding=sys.__stderr__.encoding or "utf-8", errors="replace")
        sys.__stderr__ = sys.stderr = terminal
    os.dup2(target, 2)
    os.close(target)


def restore_stderr() -> None:
    global _saved_stderr
    if _saved_stderr is not None:
        sys.stderr.flush()
        os.dup2(_saved_stderr, 2)
        os.close(_saved_stderr)
        _saved_stderr = None


def run_app(config: TrainConfig, **options: Any) -> int:
    redirect_stderr(cache_dir() / "tui-stderr.log")
    try:
        result = AlexNetApp(config, capture_stderr=True, **options).run()
    finally:
        restore_stderr()
    if result is None:
        print("alexnet-tui: the app ended abnormally", file=sys.stderr)
        return 1
    return result
