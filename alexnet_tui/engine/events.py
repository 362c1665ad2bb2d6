"""Plain dataclass events the engine emits; every subscriber (UI, logs, metrics file, tests) reads these."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class RunState(enum.StrEnum):
    """Where a run is: the engine emits these, the UI greys keys by them, `runs` lists them."""

    IDLE = "idle"
    PREPARING = "preparing"  # scanning the data, building the model
    TRAINING = "training"
    PAUSED = "paused"
    EVALUATING = "evaluating"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # only in `runs`: the process died without a word (kill -9, power loss)
    DOWNLOADING = "downloading"  # only in the TUI: fetching Cats vs Dogs before a run

    @property
    def busy(self) -> bool:
        """A run is in progress: stopping it means something, starting another does not."""
        return self in (RunState.PREPARING, RunState.TRAINING, RunState.PAUSED, RunState.EVALUATING)


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
class RunPrepared(Event):
    """The run's folder is claimed (said once per prepare): its files may be written from now on."""

    name: ClassVar[str] = "run_prepared"
    run_dir: str


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
    seconds_left: float | None = None  # the run's remaining training batches at the current pace
    lr: float | None = None  # the learning rate this batch was trained with (None in older metrics files)


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
class MachineSample(Event):
    """What the training process uses, every few seconds: a viewer on another machine (attach, the
    served page) shows these, not its own figures."""

    name: ClassVar[str] = "machine"
    pid: int
    host: str
    rss_mib: float
    process_cpu_percent: float  # of one core: 180 is nearly two cores busy
    cores_percent: list[float]  # the machine's, per core
    device: str
    gpu_allocated_gib: float | None = None
    gpu_peak_gib: float | None = None
    gpu_total_gib: float | None = None
    gpu_lines: list[str] = field(default_factory=list)  # NVML's utilisation, temperature and power


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
    name: ClassVar[str] = "state"
    state: RunState

    def __post_init__(self) -> None:
        self.state = RunState(self.state)  # from metrics.jsonl it arrives as a plain string


@dataclass
class Notice(Event):
    """Something the user should read that is not a metric (skipped files, a saved checkpoint)."""

    name: ClassVar[str] = "notice"
    message: str
    level: str = "info"
    title: str = ""  # a titled notice is news worth a toast on a screen (early stopping), not only a log line


@dataclass
class Progress(Event):
    """A long step that is not training: checking the images, an evaluation pass. At most a few a
    second; the drivers work out rate and ETA from the times."""

    name: ClassVar[str] = "progress"
    task: str
    done: int
    total: int


@dataclass
class ReportWritten(Event):
    """The full evaluation report (per class, confusion, mistakes) is in RUN_DIR/evaluation-SPLIT.json."""

    name: ClassVar[str] = "report"
    split: str
    path: str


@dataclass
class ControlAck(Event):
    """A request from elsewhere (attach, a STOP file) taken by the run: every screen says so."""

    name: ClassVar[str] = "control"
    command: str
    sender: str


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


class EventBus:
    """Hands each event to every subscriber. A subscriber that raises (a terminal gone, a full disk
    under metrics.jsonl) is reported once to the others and never stops the run."""

    def __init__(self, subscribers: Iterable[Subscriber] = (), muted: bool = False) -> None:
        self.subscribers = list(subscribers)
        self.muted = muted  # under DDP only rank 0 speaks for the job
        self._failed: set[int] = set()

    def subscribe(self, subscriber: Subscriber) -> None:
        # A new list rather than append: emit() may be iterating the old one in the training thread.
        self.subscribers = [*self.subscribers, subscriber]

    def emit(self, event: Event) -> None:
        if self.muted:
            return
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception as error:  # noqa: BLE001 - a broken log or screen must never kill a run
                self._failed_once(subscriber, error)

    def _failed_once(self, subscriber: Subscriber, error: Exception) -> None:
        if id(subscriber) in self._failed:
            return
        self._failed.add(id(subscriber))
        notice = Notice(f"{subscriber!r} failed ({type(error).__name__}: {error}); training goes on", "warning")
        for other in self.subscribers:
            if other is not subscriber:
                # That one's own first failure is reported in its turn.
                with contextlib.suppress(Exception):
                    other(notice)


EVENT_TYPES: dict[str, type[Event]] = {}


def from_json(record: dict[str, Any]) -> Event | None:
    """An event back from a metrics.jsonl line (None for an unknown kind, e.g. from a newer version)."""
    if not EVENT_TYPES:
        EVENT_TYPES.update({kind.name: kind for kind in Event.__subclasses__()})
    kind = EVENT_TYPES.get(record.get("event", ""))
    if kind is None:
        return None
    fields = {f.name: f for f in dataclasses.fields(kind)}
    values = {key: value for key, value in record.items() if key in fields}
    for key, value in values.items():
        if value is None and fields[key].type == "float":
            values[key] = math.nan  # JSON has no nan or inf: to_json wrote them as null
    if kind is BestCheckpoint and record.get("previous") is None:
        values["previous"] = math.inf  # the first best improves on inf
    try:
        return kind(**values)
    except (TypeError, ValueError):
        return None


class ProgressThrottle:
    """Turns a stream of (done, total) into Progress events, at most one every `every_s` seconds
    (and always the last), so a 25,000-file scan does not flood the screen or metrics.jsonl."""

    def __init__(self, emit: Subscriber, task: str, every_s: float = 0.5) -> None:
        self.emit, self.task, self.every_s = emit, task, every_s
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= self.every_s:
            self._last = now
            self.emit(Progress(self.task, done, total))
