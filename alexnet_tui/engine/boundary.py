"""What the training loop does at a batch boundary: go on, evaluate, pause or stop, answered in one
place from the requests (keys, attach's request files, a STOP file) and, under DDP, the ranks'
agreement on them."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import torch

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.control import Command, Control, Wants
from alexnet_tui.engine.distributed import Ranks, agree
from alexnet_tui.engine.run_dir import RunDirectory

REQUEST_POLL_S = 0.2  # the run directory is looked at for requests at most this often while training
DIST_SYNC_BATCHES = 8  # under DDP, ranks agree on stopping and read metrics back every this many batches


class Decision(enum.Enum):
    GO = "go"
    EVALUATE = "evaluate"
    PAUSE = "pause"
    STOP = "stop"


class Boundary:
    """Answers `decide()` at each batch boundary. Under DDP the ranks agree every DIST_SYNC_BATCHES
    batches and every rank acts on the agreement, not on its own Control: a signal that lands on one
    rank after an agreement waits for the next, or that rank alone would stop (or leave a pause) while
    the others wait in a collective for it."""

    def __init__(
        self,
        control: Control,
        ranks: Ranks,
        device: torch.device,
        run_dir: RunDirectory | None,
        emit: Callable[[ev.Event], None],
    ) -> None:
        self.control, self.ranks, self.device, self.run_dir, self.emit = control, ranks, device, run_dir, emit
        self._last_poll = 0.0
        self.agreed = Wants.NOTHING  # under DDP: what the ranks agreed on last

    def decide(self, batch: int | None = None) -> Decision:
        """What to do before training `batch` (None: now, as every rank does while paused)."""
        self.serve_requests(every_s=REQUEST_POLL_S if batch is not None else 0.0)
        if not self.ranks.distributed:
            return _decision(self.control.take_wants())
        if batch is not None and batch % DIST_SYNC_BATCHES:
            return Decision.GO
        return _decision(self._agree())

    def stop_now(self) -> bool:
        """During an evaluation pass: whether a stop cuts it short. Under DDP never (the ranks must
        run the same collectives): they stop at the next training batch."""
        if self.ranks.distributed:
            return False
        self.serve_requests()
        return self.control.stop_requested

    def wait_while_paused(self) -> None:
        self.control.wait_while_paused()

    def serve_requests(self, every_s: float = REQUEST_POLL_S) -> None:
        """Requests from `attach` or a STOP file (rank 0 holds the folder), acknowledged on every screen."""
        if self.run_dir is None or time.monotonic() - self._last_poll < every_s:
            return
        self._last_poll = time.monotonic()
        requests, said = self.run_dir.take_requests()
        for line in said:
            self.emit(ev.Notice(line, "warning"))
        for request in requests:
            self.control.send(request.command, request.sender)
            self.emit(ev.ControlAck(request.command, request.sender))

    def _agree(self) -> Wants:
        control = self.control
        agreed = agree(control.take_wants(), self.ranks, self.device)
        if Wants.STOP in agreed and not control.stop_requested:
            control.request_stop("another rank was asked to stop")
        if not self.ranks.main:  # rank 0 reads the requests; the others mirror its pause to wait on it
            control.send(Command.PAUSE if Wants.PAUSE in agreed else Command.RESUME)
        self.agreed = agreed
        return agreed


def _decision(wants: Wants) -> Decision:
    """A stop outranks the rest (a stop also lifts a pause); an evaluation asked while paused is served."""
    if Wants.STOP in wants:
        return Decision.STOP
    if Wants.EVALUATE in wants:
        return Decision.EVALUATE
    if Wants.PAUSE in wants:
        return Decision.PAUSE
    return Decision.GO
