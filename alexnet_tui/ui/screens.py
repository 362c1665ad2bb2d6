"""Modal screens: key help and the quit confirmation."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
[b]alexnet-tui keys[/b]

  s   start training (after a stop: go on from where it stopped)
  p   pause / resume at the next batch boundary
  x   stop at the next batch boundary; last.pt is written
  e   evaluate on the validation set now (idle, paused or stopped)
  q   quit (asks first while a run is busy)
  1-5  show the Train, Model, Charts, Predict and Log tabs
  tab  move between the settings fields; enter starts, escape leaves a field
  ?   this help

Everything the run reports is also in RUN_DIR/metrics.jsonl.
Press escape or ? to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(HELP_TEXT)


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
