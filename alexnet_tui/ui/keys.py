"""The keys: what each one is bound to, when it does something, and what the header says of a
request a key made until the run reaches it. A new key is a Binding here, a line in `available`, an
`action_*` on the app, and a line of the help screen (screens.py)."""

from __future__ import annotations

import enum

from textual.binding import Binding

from alexnet_tui.engine.events import RunState

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

FIELD_OF_TAB = {"predict": "#predict-path", "charts-tab": "#compare-run"}  # focused when their tab opens
# What the arrow and page keys move on a tab with no field (and on Charts once esc leaves its field):
# with no mouse over SSH, the Model summary and the machine panel below the charts are out of reach
# at 80x24 otherwise. None of these takes a letter key.
SCROLLER_OF_TAB = {"model": "#model-scroll", "charts-tab": "#charts-scroll", "report": "#mistakes", "log": "#log-view"}


def available(action: str, state: RunState, attached: bool, read_only: bool, typing: bool) -> bool | None:
    """Whether a key does something now: None greys it out in the footer, False hides it. `typing`:
    a field has the focus (esc leaves it)."""
    if action == "leave_field":
        return typing or False
    if action in ("quit_app", "leave"):
        return (action == "leave") == attached or False
    if attached:
        if action == "start":
            return False  # a screen on another process's run never starts one
        steer = {
            "pause": not read_only and state.busy,
            "evaluate": not read_only and state.busy,
            "stop": state.busy,  # watch: by a STOP file; nothing to stop once the run is over
        }
        return True if steer.get(action, True) else None
    allowed = {
        "start": not state.busy and state != RunState.DOWNLOADING,
        "pause": state.busy,  # while validating too: it pauses at the next batch
        "stop": state.busy,
        "evaluate": state != RunState.DOWNLOADING and state != RunState.PREPARING,
    }
    return True if allowed.get(action, True) else None


class Request(enum.Enum):
    """A key's request that the run takes at its next batch boundary: said on the header at once."""

    PAUSE = "PAUSING"
    RESUME = "RESUMING"
    STOP = "STOPPING"
    EVALUATE = "evaluation requested"

    def reached(self, state: RunState) -> bool:
        """Whether the run is where this request leads (a validation on the way is not a stop)."""
        if not state.busy:
            return True
        if self is Request.PAUSE:
            return state == RunState.PAUSED
        if self is Request.RESUME:
            return state != RunState.PAUSED
        return False  # STOP: not busy any more; EVALUATE: its EvaluationEnd clears it
