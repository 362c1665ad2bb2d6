"""The training engine: no UI imports; it emits events and obeys a Control.

The trainer (and with it torch) is imported on first use: viewers (`runs`, `attach`, `watch`, the
served page) read events and send requests, and must start in a fraction of a second without it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from alexnet_tui.engine.control import Control, StoppedBeforeStart
from alexnet_tui.engine.events import RunState

if TYPE_CHECKING:
    from alexnet_tui.engine.trainer import Trainer
    from alexnet_tui.engine.training_state import RunOutcome, RunPosition

__all__ = ["Control", "RunOutcome", "RunPosition", "RunState", "StoppedBeforeStart", "Trainer"]
_LAZY = {
    "Trainer": "alexnet_tui.engine.trainer",
    "RunOutcome": "alexnet_tui.engine.training_state",
    "RunPosition": "alexnet_tui.engine.training_state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
