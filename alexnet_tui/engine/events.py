"""Plain dataclass events the engine emits; every subscriber (UI, logs, metrics file, tests) reads these."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Event:
    name: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with an `event` field; inf/nan become None (JSON has neither)."""
        values = {"event": self.name, **dataclasses.asdict(self)}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


@dataclass
class RunStarted(Event):
    name: ClassVar[str] = "run_started"
    run_dir: str
    device: str
    amp: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    start_epoch: int
    start_batch: int
    pid: int = 0
    host: str = ""


@dataclass
class EpochStarted(Event):
    name: ClassVar[str] = "epoch_started"
    epoch: int
    epochs: int
    batches: int


@dataclass
class BatchEnd(Event):
    name: ClassVar[str] = "batch"
    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    acc: float
    running_loss: float
    running_acc: float
    images_per_sec: float
    data_wait_share: float = 0.0  # of the wall time since the last report, the part spent waiting for data


@dataclass
class EpochEnd(Event):
    name: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    images_per_sec: float
    seconds: float
    best: bool


@dataclass
class BestCheckpoint(Event):
    name: ClassVar[str] = "best_checkpoint"
    epoch: int
    previous: float
    current: float
    path: str

    @property
    def message(self) -> str:
        return f"val_loss has been improved from {self.previous:.5f} to {self.current:.5f}. Saving Model!"


@dataclass
class EvaluationStarted(Event):
    name: ClassVar[str] = "evaluation_started"
    split: str
    batches: int


@dataclass
class EvaluationEnd(Event):
    name: ClassVar[str] = "evaluation"
    split: str
    loss: float
    acc: float
    images: int
    checkpoint: str | None
    requested: bool = False  # asked for by the user, not the end-of-epoch validation


@dataclass
class StateChanged(Event):
    """idle, training, paused, evaluating, stopped, finished, failed."""

    name: ClassVar[str] = "state"
    state: str


@dataclass
class Notice(Event):
    """Something the user should read that is not a metric (skipped files, a saved checkpoint)."""

    name: ClassVar[str] = "notice"
    message: str
    level: str = "info"


@dataclass
class Stopped(Event):
    name: ClassVar[str] = "stopped"
    epoch: int
    batch: int
    last_checkpoint: str | None
    reason: str


@dataclass
class Finished(Event):
    name: ClassVar[str] = "finished"
    best_val_loss: float
    test_loss: float
    test_acc: float
    seconds: float


@dataclass
class Failed(Event):
    name: ClassVar[str] = "failed"
    message: str
    details: str = ""


Subscriber = Callable[[Event], None]

EVENT_TYPES: dict[str, type[Event]] = {}


def from_json(record: dict[str, Any]) -> Event | None:
    """An event back from a metrics.jsonl line (None for an unknown kind, e.g. from a newer version)."""
    if not EVENT_TYPES:
        EVENT_TYPES.update({kind.name: kind for kind in Event.__subclasses__()})
    kind = EVENT_TYPES.get(record.get("event", ""))
    if kind is None:
        return None
    names = {f.name for f in dataclasses.fields(kind)}
    values = {key: value for key, value in record.items() if key in names}
    if kind is BestCheckpoint and values.get("previous") is None:
        values["previous"] = math.inf  # JSON has no inf; the first best improves on inf
    try:
        return kind(**values)
    except TypeError:
        return None
