"""Modal screens: key help, the quit confirmation, and the Cats vs Dogs download."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

HELP_TEXT = """\
[b]alexnet-tui keys[/b]

  s   start; after a stop: go on where it stopped; after a finish:
      the settings form for a new run, and s again starts it
  p   pause / resume at the next batch boundary (header: PAUSING)
  x   stop at the next batch boundary, writing last.pt (STOPPING)
  e   evaluate on the validation images: while a run trains at its
      next batch boundary (training goes on), otherwise now
  q   quit (asks first while a run is busy; it is stopped and saved)
  1-6 tabs: Train, Model, Charts, Predict, Report, Log
  tab move between fields and tables; enter in a settings field
      starts, on Predict it predicts, on Charts it compares
  esc leave a field (while a field has focus, keys type into it);
      arrows and page keys then scroll the tab
  ctrl+p  the command palette: every key that works now, by name

Every event of a run is in RUN_DIR/metrics.jsonl. escape closes."""

ATTACHED_HELP_TEXT = """\
[b]alexnet-tui keys on a run started elsewhere[/b]

  p   pause / resume the run at its next batch boundary
  x   stop it at its next batch boundary; it writes last.pt
  e   evaluate on the validation images at its next batch boundary
  q   leave this screen; the run goes on
  1-6  the Train, Model, Charts, Predict, Report and Log tabs
  esc  leave a field: while a field has focus, keys type into it
  ctrl+p  the command palette
  ?   this help

Press escape or ? to close."""

WATCH_HELP_TEXT = """\
[b]alexnet-tui watch: following a run, read-only[/b]

  x   ask the run to stop: creates RUN_DIR/STOP (at its next batch)
  q   leave this screen; the run goes on
  1-6  the Train, Model, Charts, Predict, Report and Log tabs
  esc  leave a field: while a field has focus, keys type into it
  ?   this help

To pause or evaluate, use alexnet-tui attach RUN_DIR.
Press escape or ? to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, attached: bool = False, read_only: bool = False) -> None:
        super().__init__()
        self.text = WATCH_HELP_TEXT if read_only else ATTACHED_HELP_TEXT if attached else HELP_TEXT

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.text)


class ConfirmQuit(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes, stop and quit"),
        Binding("n,escape", "answer(False)", "No, keep training"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("A run is in progress. Stop it (last.pt is saved) and quit?\n\n  y  yes    n  no")

    def action_answer(self, confirmed: bool) -> None:
        self.dismiss(confirmed)


class DownloadOffer(ModalScreen[str]):
    """Cats vs Dogs is not on disk yet: download it here, or train on the demo set."""

    BINDINGS = [
        Binding("d", "choose('download')", "Download"),
        Binding("m", "choose('demo')", "Use demo data"),
        Binding("escape,n", "choose('cancel')", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                "Cats vs Dogs is not downloaded yet (about 800 MB).\n\n"
                "  d  download it now (resumable; progress below)\n"
                "  m  train on the built-in demo set instead\n"
                "  escape  cancel"
            )

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class DownloadProgress(ModalScreen[bool]):
    """Fetches Cats vs Dogs with a progress bar; dismisses with True once it is on disk."""

    def __init__(self, url: str, dest: Path) -> None:
        super().__init__()
        self.url, self.dest = url, dest
        self.progress: tuple[int, int | None] = (0, None)  # written by the worker, drawn by a timer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Downloading Cats vs Dogs into {self.dest} (resumable)")
            yield ProgressBar(total=None, id="download-bar")
            yield Label("", id="download-amount")

    def on_mount(self) -> None:
        self.set_interval(0.1, self.show_progress)
        self.fetch()

    @work(thread=True, exclusive=True, group="download", exit_on_error=False)
    def fetch(self) -> None:
        from alexnet_tui.download import DownloadError, install_dataset

        worker = get_current_worker()

        def report(done: int, total: int | None) -> None:
            if worker.is_cancelled:  # the app is quitting: stop here, the .part file resumes next time
                raise DownloadError("download cancelled; it resumes where it stopped next time")
            self.progress = (done, total)

        install_dataset(self.url, self.dest, report)

    def show_progress(self) -> None:
        done, total = self.progress
        self.query_one("#download-bar", ProgressBar).update(total=total, progress=done)
        of = f" of {total / 1e6:.0f}" if total else ""
        self.query_one("#download-amount", Label).update(f"{done / 1e6:.0f}{of} MB")

    @on(Worker.StateChanged)
    def finished(self, message: Worker.StateChanged) -> None:
        if message.state == WorkerState.SUCCESS:
            self.dismiss(True)
        elif message.state == WorkerState.ERROR:
            self.app.notify(str(message.worker.error), title="Download failed", severity="error", markup=False)
            self.dismiss(False)
