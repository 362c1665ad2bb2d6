"""The training engine: no UI imports; it emits events and obeys a Control."""

from alexnet_tui.engine.control import Control, StoppedBeforeStart
from alexnet_tui.engine.events import RunState
from alexnet_tui.engine.trainer import Trainer
from alexnet_tui.engine.training_state import RunOutcome, RunPosition

__all__ = ["Control", "RunOutcome", "RunPosition", "RunState", "StoppedBeforeStart", "Trainer"]
