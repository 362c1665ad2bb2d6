"""The training engine: no UI imports; it emits events and obeys a Control."""

from alexnet_tui.engine.control import Control
from alexnet_tui.engine.trainer import RunOutcome, Trainer

__all__ = ["Control", "RunOutcome", "Trainer"]
