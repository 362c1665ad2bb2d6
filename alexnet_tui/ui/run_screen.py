"""The run's screen: its layout, and engine events (from this process or metrics.jsonl) into widgets.

The app hands it the queue the engine (or the follower of another process's run) fills; the screen
drains it at most REFRESH_HZ a second and owns everything it shows of the run (state, request,
folder, device, data, bars, log). The keys stay with the app, which asks the screen what it shows."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, ProgressBar, Static, TabbedContent, TabPane

from alexnet_tui.config import TrainConfig, recipe_text
from alexnet_tui.engine import RunState
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.follow import CaughtUp, FollowReset, MetricsFollower, RunGone
from alexnet_tui.headless import format_epoch
from alexnet_tui.paths import printable
from alexnet_tui.ui import terminal
from alexnet_tui.ui.keys import FIELD_OF_TAB, SCROLLER_OF_TAB, Request
from alexnet_tui.ui.model_summary import ModelSummary, guess_classes
from alexnet_tui.ui.widgets.charts import TrainingCharts
from alexnet_tui.ui.widgets.predict import PredictPane
from alexnet_tui.ui.widgets.reflow_log import ReflowLog
from alexnet_tui.ui.widgets.report import ReportPane
from alexnet_tui.ui.widgets.settings import SettingsForm
from alexnet_tui.ui.widgets.system import SystemPanel
from alexnet_tui.ui.widgets.tables import BatchTable, EpochTable

REFRESH_HZ = 10  # the screen follows the engine at most this often, however fast batches come
LOG_LINES = 2000  # the Log tab keeps the newest lines; the whole run is in metrics.jsonl
CHARTS_REDRAW_S = 0.5  # the charts follow the run less often than the tables, and only while shown


def show_text(widget: Static, text: str) -> None:
    """New text for a widget of fixed size: a repaint of it alone, never a layout of the screen (which
    the trainer thread would pay for in GIL time at every batch), and nothing when it is unchanged."""
    if widget.content != text:
        widget.update(text, layout=False)


class RunScreen(Screen):
    """The one screen of a run trained here, attached to or watched."""

    state: reactive[RunState] = reactive(RunState.IDLE)  # watch_state refreshes the footer's keys

    def __init__(
        self,
        config: TrainConfig,
        pending: deque[ev.Event],
        attached: Path | None = None,
        read_only: bool = False,
        capture_stderr: bool = False,
    ) -> None:
        super().__init__()
        self.config = config  # the run shown (the app sets the next run's)
        self.pending = pending  # the engine's thread (or the follower) appends; drain_events empties it
        self.attached = attached  # a run directory another process is running
        self.read_only = read_only  # `watch`: follow only
        self.capture_stderr = capture_stderr  # a real terminal run, not a test or a screenshot
        self.catching_up = attached is not None  # no toasts for the history read on attach
        self.request: Request | None = None  # a key's request the run has not reached yet (STOPPING...)
        self.dataset_text = "data: not loaded yet"
        self.device_text = config.device
        self.run_dir: Path | None = attached
        self.progress_task, self.progress_started = "", 0.0  # the long step on the epoch bar, if any
        self.latest_rate: float | None = None
        self.latest_wait: float | None = None
        self.latest_batch: ev.BatchEnd | None = None  # where the epoch bar goes back to after a validation
        self.charts_drawn = 0.0  # monotonic time of the last redraw of the Charts tab
        self.footer_keys: tuple[bool | None, ...] = ()  # what check_action said at the last footer refresh
        self.hidden_log: deque[str] = deque(maxlen=LOG_LINES)  # written while the Log tab was hidden
        self.summary: ModelSummary | None = None  # the Model tab's table, made once mounted

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
        self.summary = ModelSummary(self.app)
        self.set_interval(1 / REFRESH_HZ, self.drain_events)
        self.set_interval(1.0, self.update_system)
        self.update_system()
        if self.attached is None:  # attached: the Model tab asks a helper process when first shown
            self.summary.build(self.config, guess_classes(self.config), self.config.image_size)
        else:
            self.show_live()
            self.query_one(PredictPane).run_dir = self.attached
            self.show_saved_report(self.attached)
        self.update_status()

    def show_live(self) -> None:
        """The tables replace the settings form once a run or an evaluation starts."""
        self.query_one("#setup").display = False
        self.query_one("#live").display = True

    def show_setup(self) -> None:
        """After a finish: the form again, holding the last run's settings, for the next run."""
        self.query_one(TabbedContent).active = "train"
        self.query_one("#live").display = False
        self.query_one("#setup").display = True
        self.query_one(SettingsForm).show_hint("A new run: set what you like,\nthen s (or enter) starts it.")
        self.set_focus(None)

    def toast(self, message: str, **options: Any) -> None:
        """A notification, but for what happened before the screen caught up with a run's history."""
        if not self.catching_up:
            self.notify(message, **options)

    # ---- events -------------------------------------------------------------------------------
    def drain_events(self) -> None:
        """Apply what the engine reported since the last tick, in order, at most REFRESH_HZ a second."""
        if not self.pending or not self.is_mounted:
            return  # most ticks: nothing to do; and a tick while Textual takes the widgets down finds none
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
        self.redraw_charts()

    def redraw_charts(self, now: bool = False) -> None:
        """The Charts tab is drawn only while it is shown, at most every CHARTS_REDRAW_S (now: at once)."""
        if not self.is_mounted or self.query_one(TabbedContent).active != "charts-tab":
            return
        if now or time.monotonic() - self.charts_drawn >= CHARTS_REDRAW_S:
            self.charts_drawn = time.monotonic()
            self.query_one(TrainingCharts).redraw()

    def on_tabbed_content_tab_activated(self, message: TabbedContent.TabActivated) -> None:
        """A tab with a field gives it the focus, so what is typed next goes into it and never reaches
        the run's keys; escape gives the keys back."""
        pane = message.pane.id or ""
        if pane == "charts-tab":
            self.redraw_charts(now=True)
            self.update_system()
        if pane == "log" and self.hidden_log:
            self.call_after_refresh(self.flush_log)  # sized now: lines wrap at the screen's width
        if pane == "model" and self.attached is not None and self.summary is not None:
            self.summary.ask_of_run(self.attached, self.config)
        if pane in FIELD_OF_TAB:
            self.query_one(FIELD_OF_TAB[pane], Input).focus()
        else:
            self.focus_scroller(pane)

    def focus_scroller(self, pane: str) -> None:
        """The tab's scrolling part takes the keys (none: nothing has focus, the run's keys act)."""
        self.set_focus(self.query_one(SCROLLER_OF_TAB[pane]) if pane in SCROLLER_OF_TAB else None)

    def show_history(self, resume: Path) -> None:
        """--resume: the run so far, from its metrics.jsonl, drawn before s goes on with it (the screen
        said "run: not started" and then showed only the new epochs)."""
        run_dir = resume if resume.is_dir() else resume.parent
        follower = MetricsFollower(run_dir / "metrics.jsonl")
        try:
            history = follower.poll()
        except OSError:
            history = []
        finally:
            follower.close()
        if history:
            self.catching_up = True  # no toasts for what happened before
            self.pending.extend([*history, CaughtUp()])

    def add_batch_rows(self, rows: list[ev.BatchEnd]) -> None:
        if not rows:
            return
        self.query_one(BatchTable).add_batches(rows)
        self.query_one(TrainingCharts).add_batches(rows)
        last = self.latest_batch = rows[-1]
        show_text(self.query_one("#bar-label", Label), "epoch")
        self.latest_rate, self.latest_wait = last.images_per_sec, last.data_wait_share
        self.query_one("#epoch-progress", ProgressBar).update(total=last.batches, progress=last.batch)
        done = (last.epoch - 1) * last.batches + last.batch
        self.query_one("#run-progress", ProgressBar).update(total=last.epochs * last.batches, progress=done)
        if last.seconds_left is not None:
            self.show_eta(last.seconds_left)

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, CaughtUp):
            self.catching_up = False
        elif isinstance(event, FollowReset):
            self.query_one(BatchTable).clear()
            self.query_one(EpochTable).reset()
            self.query_one(TrainingCharts).reset()
            self.log_line("metrics.jsonl was truncated or replaced: reading it again from the start")
        elif isinstance(event, RunGone):
            self.state_reached(RunState.INTERRUPTED)
            self.log_line(event.message)
            self.toast(event.message, title="The run is gone", severity="error", timeout=30, markup=False)
        elif isinstance(event, ev.ReportWritten):
            self.query_one(ReportPane).load(Path(event.path))
        elif isinstance(event, ev.Progress):
            self.show_progress(event)
        elif isinstance(event, ev.StateChanged):
            self.state_reached(event.state)
        elif isinstance(event, ev.RunStarted):
            self.run_started(event)
        elif isinstance(event, ev.BestCheckpoint):
            # The newest supersedes the last (short epochs stacked them): queued, as toasts are.
            self.app.call_later(self.drop_toasts, "New best checkpoint")  # behind the toasts before it
            self.toast(f"{event.message}\n{event.path}", title="New best checkpoint", timeout=6, markup=False)
            self.log_line(f"[INFO] {event.message} -> {event.path}")
        elif isinstance(event, ev.EpochEnd):
            self.query_one(EpochTable).add_epoch(event)
            self.query_one(TrainingCharts).add_epoch(event)
            self.log_line(format_epoch(event))
        elif isinstance(event, ev.EvaluationEnd) and (event.requested or event.checkpoint):
            if event.requested and self.request is Request.EVALUATE:
                self.request = None
            self.query_one(EpochTable).add_evaluation(event)
            self.log_line(f"{event.split} loss: {event.loss:.5f}, {event.split} accuracy: {event.acc:.5f}")
        elif isinstance(event, (ev.Stopped, ev.Finished)):
            self.run_ended(event)
        elif isinstance(event, ev.Failed):
            self.show_eta(None)
            self.log_line(f"training failed: {event.message}")
            self.toast(event.message, title="Training failed", severity="error", timeout=10, markup=False)
        elif isinstance(event, ev.MachineSample):
            self.query_one(SystemPanel).show_sample(event)  # drawn by the panel's once-a-second update
        elif isinstance(event, ev.ControlAck):
            self.log_line(f"{event.command} requested by {event.sender}")
            self.toast(f"{event.command} requested by {event.sender}", title="Request taken", markup=False)
        elif isinstance(event, ev.Notice):
            self.log_line(event.message)
            if event.title:
                self.toast(event.message, title=event.title, timeout=10, markup=False)
        self.update_status()

    def state_reached(self, state: RunState) -> None:
        """The run's new state; a key's request it has reached is done. Outside training the epoch bar
        goes back to the epoch's place (it said "evaluating 100%" through a pause or after a finish)."""
        self.state = state
        if self.request is not None and self.request.reached(state):
            self.request = None
        if state not in (RunState.TRAINING, RunState.EVALUATING, RunState.PREPARING):
            show_text(self.query_one("#bar-label", Label), "epoch")
            last = self.latest_batch
            bar = self.query_one("#epoch-progress", ProgressBar)
            if state == RunState.FINISHED:
                bar.update(total=bar.total or 1, progress=bar.total or 1)
            elif last is not None:
                bar.update(total=last.batches, progress=last.batch)

    def clear_run_display(self) -> None:
        """A second run in this app: its rows, curves and bars start afresh (the last run is in its folder)."""
        self.query_one(BatchTable).clear()
        self.query_one(EpochTable).reset()
        self.query_one(TrainingCharts).reset()
        for bar in self.query(ProgressBar).results(ProgressBar):
            bar.update(total=1, progress=0)
        self.latest_batch = None
        self.query_one(SystemPanel).show_sample(None)
        self.show_eta(None)
        self.log_line(f"---- a new run (the last one is in {self.run_dir}) ----")

    def run_ended(self, event: ev.Stopped | ev.Finished) -> None:
        """Say it and leave no ETA behind; a finished run's bar is full (--patience ends it before its epochs)."""
        self.show_eta(None)
        if isinstance(event, ev.Stopped):
            self.log_line(f"stopped at epoch {event.epoch:02d}, batch {event.batch}; saved {event.last_checkpoint}")
            self.toast(f"Saved {event.last_checkpoint}. Press s to go on.", title="Stopped", markup=False)
            return
        bar = self.query_one("#run-progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        self.log_line(f"finished in {event.seconds:.1f} s; test accuracy {event.test_acc:.5f}")
        self.toast(f"test accuracy {event.test_acc:.5f}", title="Finished", markup=False)

    def show_progress(self, event: ev.Progress) -> None:
        """A long step that is not training (checking images, an evaluation) on the epoch bar."""
        if event.task != self.progress_task:
            self.progress_task, self.progress_started = event.task, event.time
        show_text(self.query_one("#bar-label", Label), event.task.split()[0])
        self.query_one("#epoch-progress", ProgressBar).update(total=event.total, progress=event.done)
        rate = event.done / max(event.time - self.progress_started, 1e-9)
        if event.done and event.done < event.total:
            self.show_eta((event.total - event.done) / rate)
        elif event.done >= event.total:
            self.show_eta(None)  # done: no time left to tell

    def show_eta(self, seconds_left: float | None) -> None:
        """The time left beside the run bar; None leaves nothing there (a run or a step that ended)."""
        minutes, seconds = divmod(int(seconds_left or 0), 60)
        show_text(self.query_one("#eta", Label), "" if seconds_left is None else f"ETA {minutes}:{seconds:02d}")

    def show_saved_report(self, run_dir: Path) -> None:
        """The newest report already in the run folder (`alexnet-tui evaluate` writes one too), and the
        way to get one that works on this screen."""
        reports = sorted(run_dir.glob("evaluation-*.json"), key=lambda path: path.stat().st_mtime)
        if reports:
            self.query_one(ReportPane).load(reports[-1])
        elif self.read_only:  # e does nothing here
            self.query_one("#report-summary", Label).update(
                f"no evaluation report yet: the run's final report brings one, "
                f"or alexnet-tui evaluate --checkpoint {run_dir}"
            )

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
        self.log_line(f"recipe: {recipe_text(event.config)}")
        classes_known = self.config.num_classes or len(data["class_names"]) == guess_classes(self.config)
        if self.attached is None and not classes_known and self.summary is not None:
            self.summary.build(self.config, len(data["class_names"]), self.config.image_size)

    def drop_toasts(self, title: str) -> None:
        """Take down the toasts titled `title` (Textual has no public way to remove one). Called through
        the message queue, after the toasts notified before it are up."""
        app = self.app
        for toast in [toast for toast in app._notifications if toast.title == title]:
            app._unnotify(toast, refresh=False)
        app._refresh_notifications()

    def update_system(self) -> None:
        """Once a second while the Charts tab (where the panel is) is shown; also draws what the last
        drains left to the next chart redraw (a run that paused or ended within CHARTS_REDRAW_S)."""
        if not self.is_mounted or self.query_one(TabbedContent).active != "charts-tab":
            return
        self.query_one(TrainingCharts).redraw()
        device = self.device_text.split()[0] if self.run_dir is not None else self.config.device
        self.query_one(SystemPanel).show(device, self.latest_rate, self.latest_wait, self.run_dir is not None)

    def log_line(self, text: str) -> None:
        """A line for the Log tab. While the tab is hidden it waits: a RichLog that is not shown wraps
        at a width of its own, not the screen's."""
        text = printable(text)  # a file name that is not UTF-8
        if self.query_one(TabbedContent).active == "log":
            self.query_one("#log-view", ReflowLog).add(text)
        else:
            self.hidden_log.append(text)

    def flush_log(self) -> None:
        view = self.query_one("#log-view", ReflowLog)
        while self.hidden_log:
            view.add(self.hidden_log.popleft())

    def update_status(self) -> None:
        """State, then the run folder (what attach and --resume need, so it comes before what can be cut),
        device and data."""
        mode = ""
        if self.attached is not None:
            mode = " (watching)" if self.read_only else " (attached)"
        word = self.state.upper()
        if self.request is Request.EVALUATE:
            word += f" · {self.request.value}"
        elif self.request is not None:
            word = self.request.value
        where = str(self.run_dir or "run: not started")
        status = f"[b]{word}[/b]{mode} | {where} | {self.device_text} | {self.dataset_text}"
        show_text(self.query_one("#status", Static), status)

    def watch_state(self, state: RunState) -> None:
        if not self.is_mounted:
            return
        self.update_status()
        # The footer is rebuilt only when a key's availability changes (training <-> validating does not).
        keys = tuple(self.app.check_action(action, ()) for action in ("start", "pause", "stop", "evaluate"))
        if keys != self.footer_keys:
            self.footer_keys = keys
            self.app.refresh_bindings()
