"""The --no-ui driver: the tutorial's log lines, a live bar only on a terminal, honest exit codes."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from alexnet_tui.config import TrainConfig, recipe_text
from alexnet_tui.engine import Control, StoppedBeforeStart
from alexnet_tui.engine import events as ev
from alexnet_tui.metrics import RunFiles
from alexnet_tui.paths import printable
from alexnet_tui.processes import start_worker_processes

if TYPE_CHECKING:
    from alexnet_tui.engine.training_state import RunOutcome

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
PLAIN_PROGRESS_EVERY_S = 10.0
PLAIN_DONE_AFTER_S = 2.0  # a step shorter than this gets no line of its own in a log file


def format_epoch(event: ev.EpochEnd) -> str:
    return (
        f"epoch {event.epoch:02d}, loss: {event.train_loss:.5f}, acc: {event.train_acc:.5f}, "
        f"val_loss: {event.val_loss:.5f}, val_accuracy: {event.val_acc:.5f}"
    )


class LineReporter:
    """Prints the run as the tutorial did, plus where things are; also hands every line to `log`
    (RunFiles.write_line: train.log). When the terminal goes away (an SSH connection dropped: writes
    fail with EIO) it goes quiet and the run goes on, logging to train.log."""

    def __init__(
        self, stream: TextIO | None = None, live: bool | None = None, log: Callable[[str], None] | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.terminal_gone = False
        self.log = log or (lambda text: None)
        self._progress = None
        self._task = None
        self._bar_label: str | None = None
        self._bar_started = 0.0
        self._last_plain = 0.0

    def to_terminal(self, text: str, stream: TextIO | None = None) -> None:
        """One line to the terminal; a terminal that is gone silences this reporter, not the run."""
        if self.terminal_gone:
            return
        try:
            if self._progress is not None:
                self._progress.console.print(text, highlight=False, markup=False)
            else:
                print(text, file=stream or self.stream, flush=True)
        except (OSError, ValueError):  # EIO from a hung-up tty; ValueError from a closed stream
            self.terminal_gone = True
            self._progress = None

    def __repr__(self) -> str:
        return "the terminal printer"

    def line(self, text: str) -> None:
        text = printable(text)  # a file name that is not UTF-8
        self.to_terminal(text)
        self.log(text)

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            data = event.dataset
            self.line(f"run directory: {event.run_dir}")
            self.line(f"device: {event.device}, mixed precision: {event.amp}")
            self.line(f"recipe: {recipe_text(event.config)}")
            self.line(
                f"data: {data['name']}, {len(data['class_names'])} classes ({', '.join(data['class_names'])}), "
                f"{data['train']} train / {data['val']} val / {data['test']} test images, {data['skipped']} skipped"
            )
            if event.start_epoch > 1 or event.start_batch > 0:
                self.line(f"resuming at epoch {event.start_epoch:02d}, batch {event.start_batch}")
        elif isinstance(event, ev.EpochStarted):
            self._start_bar(f"epoch {event.epoch:02d}/{event.epochs:02d}", event.batches)
        elif isinstance(event, ev.BatchEnd):
            self._progress_update(event)
        elif isinstance(event, ev.Progress):
            self._task_progress(event)
        elif isinstance(event, ev.BestCheckpoint):
            self._stop_bar()
            self.line(f"[INFO] {event.message}")
        elif isinstance(event, ev.EpochEnd):
            self._stop_bar()
            self.line(format_epoch(event) + f" ({event.images_per_sec:.1f} images/s, {event.seconds:.1f} s)")
        elif isinstance(event, ev.EvaluationEnd):
            if event.checkpoint:  # the final report on the best weights
                self.line(f"{event.split} loss: {event.loss:.5f}, {event.split} accuracy: {event.acc:.5f}")
                self.line(f"  ({event.images} {event.split} images; best checkpoint: {event.checkpoint})")
        elif isinstance(event, ev.Notice):
            self.line(f"[{event.level.upper()}] {event.message}")
        elif isinstance(event, ev.Stopped):
            self._stop_bar()
            self.line(
                f"stopped at epoch {event.epoch:02d}, batch {event.batch} ({event.reason}); "
                f"state saved to {event.last_checkpoint}"
            )
            self.line(f"resume with: alexnet-tui --no-ui --resume {Path(event.last_checkpoint or '.').parent}")
        elif isinstance(event, ev.Finished):
            self.line(f"finished in {event.seconds:.1f} s; best val_loss {event.best_val_loss:.5f}")
        elif isinstance(event, ev.Failed):
            self._stop_bar()
            self.to_terminal(f"alexnet-tui: training failed: {event.message}", sys.stderr)
            self.log(f"training failed: {event.message}\n{event.details}".rstrip("\n"))

    def _start_bar(self, label: str, total: int) -> None:
        self._stop_bar()
        self._last_plain = time.monotonic()
        self._bar_label, self._bar_started = label, time.monotonic()
        if not self.live or self.terminal_gone:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            transient=True,
            # Redrawn from this thread on each update, not by rich's own thread: a write that
            # fails (the terminal hung up) must fail here, where it is caught.
            auto_refresh=False,
        )
        self._task = self._progress.add_task("train", total=total, stats="")
        self._guarded(self._progress.start)

    def _progress_update(self, event: ev.BatchEnd) -> None:
        stats = f"loss {event.running_loss:.5f} acc {event.running_acc:.5f} {event.images_per_sec:.1f} img/s"
        if event.lr is not None:
            stats += f" lr {event.lr:.3g}"
        if self._progress is not None:
            progress = self._progress
            self._guarded(lambda: progress.update(self._task, completed=event.batch, stats=stats, refresh=True))
        elif time.monotonic() - self._last_plain >= PLAIN_PROGRESS_EVERY_S or event.batch == event.batches:
            self._last_plain = time.monotonic()
            self.to_terminal(f"epoch {event.epoch:02d} batch {event.batch}/{event.batches} {stats}")

    def _task_progress(self, event: ev.Progress) -> None:
        """Checking the images, an evaluation pass: a bar on a terminal, a line every 10 s in a file."""
        if self._bar_label != event.task:
            self._start_bar(event.task, event.total)
        elapsed = max(time.monotonic() - self._bar_started, 1e-9)
        rate = event.done / elapsed
        left = (event.total - event.done) / rate if rate else 0.0
        stats = f"{rate:.1f}/s"
        if self._progress is not None:
            progress = self._progress
            self._guarded(lambda: progress.update(self._task, completed=event.done, stats=stats, refresh=True))
        elif time.monotonic() - self._last_plain >= PLAIN_PROGRESS_EVERY_S or (
            event.done >= event.total and elapsed >= PLAIN_DONE_AFTER_S
        ):
            self._last_plain = time.monotonic()
            minutes, seconds = divmod(int(left), 60)
            self.to_terminal(f"{event.task}: {event.done}/{event.total} ({stats}, ETA {minutes}:{seconds:02d})")
        if event.done >= event.total:
            self._stop_bar()

    def _guarded(self, draw: Callable[[], object]) -> None:
        try:
            draw()
        except (OSError, ValueError):
            self.terminal_gone = True
            self._progress = None

    def _stop_bar(self) -> None:
        self._bar_label = None
        if self._progress is not None:
            self._guarded(self._progress.stop)
            self._progress = None

    def close(self) -> None:
        self._stop_bar()


def run_headless(config: TrainConfig) -> int:
    """Train with line logs and a metrics file; the exit code says how it ended."""
    from alexnet_tui.engine.trainer import Trainer  # torch: not for the viewers that print lines

    control = Control()
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        if received and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now; checkpoint writes are atomic
        received.append(number)
        request_from_handler(control.request_stop, f"{signal.Signals(number).name} received")

    previous = {number: signal.signal(number, on_signal) for number in EXIT_SIGNAL}
    if hasattr(signal, "SIGHUP"):
        # The SSH session dying must not kill a run left in nohup or tmux.
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if config.data != "demo":  # the demo set is in memory: no loader workers, no scan
        start_worker_processes()  # before any loader or pool, so they inherit the blocked stop signals
    files = RunFiles(text_log=True)  # under torchrun only rank 0 speaks: the others' write nothing
    reporter = LineReporter(log=files.write_line)
    trainer = Trainer(config, [reporter, files], control)
    try:
        if trainer.ranks.main:
            reporter.to_terminal(f"preparing data: {config.data} ...")
        outcome = trainer.fit()
    except StoppedBeforeStart as stop:
        reporter.to_terminal(f"alexnet-tui: stopped before training began ({stop}); nothing to save", sys.stderr)
        return EXIT_SIGNAL.get(received[0], 130) if received else 130
    except KeyboardInterrupt:
        reporter.to_terminal("alexnet-tui: interrupted; checkpoints on disk are whole (written atomically)", sys.stderr)
        return EXIT_SIGNAL[signal.SIGINT]
    finally:
        trainer.close()
        reporter.close()
        files.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return exit_code(outcome, received)


def request_from_handler(request: Callable[[str], None], reason: str) -> None:
    """From a signal handler: the request takes a threading lock that the interrupted main thread
    may be holding (inside Event.wait), so it is made from a short thread of its own."""
    threading.Thread(target=request, args=(reason,), name="stop-request", daemon=True).start()


def exit_code(outcome: RunOutcome, signals_received: list[int]) -> int:
    """0 finished, 1 failed; a stop says which signal asked for it (130 Ctrl+C or x, 143 SIGTERM)."""
    from alexnet_tui.engine.training_state import RunOutcome

    if outcome is RunOutcome.FINISHED:
        return EXIT_OK
    if outcome is RunOutcome.STOPPED:
        stops = [number for number in signals_received if number in EXIT_SIGNAL]
        return EXIT_SIGNAL[stops[0]] if stops else 130
    return EXIT_FAILED
