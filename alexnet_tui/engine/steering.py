"""What happens at a batch boundary: requests served (keys, attach, STOP), pause, evaluate-now, and
under DDP the ranks agreeing on all three. Mixed into the Trainer; the hot loop asks, this answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.distributed import agree

if TYPE_CHECKING:
    from alexnet_tui.engine.trainer import Trainer

    Base = Trainer
else:
    Base = object

RunState = ev.RunState
REQUEST_POLL_S = 0.2  # the run directory is looked at for requests at most this often while training
DIST_SYNC_BATCHES = 8  # under DDP, ranks agree on stopping and read metrics back every this many batches


class Steering(Base):
    def _requests_at_boundary(self) -> tuple[bool, bool]:
        """(evaluate now, pause or stop here). Under DDP the ranks agree every few batches."""
        self._serve_requests()
        if not self.ranks.distributed:
            return self.control.take_evaluation_request(), self.control.stop_requested or self.control.paused
        if self.progress.batch % DIST_SYNC_BATCHES:
            return False, False
        stop, pause, evaluate = self._agree()
        return evaluate, stop or pause

    def _agree(self) -> tuple[bool, bool, bool]:
        """Under DDP: the same stop, pause and evaluate-now on every rank, mirrored into each Control."""
        control = self.control
        stop, pause, evaluate = agree(
            control.stop_requested, control.paused, control.take_evaluation_request(), self.ranks, self.device
        )
        if stop and not control.stop_requested:
            control.request_stop("another rank was asked to stop")
        if not self.ranks.main:
            control.pause() if pause else control.resume()
        self._agreed_stop, self._agreed_pause = stop, pause
        return stop, pause, evaluate

    def _stopping(self) -> bool:
        """Whether to stop at this boundary. Under DDP, what the ranks agreed: a signal that lands on one
        rank after the agreement waits for the next one, or that rank alone would stop and save while
        the others trained on, each waiting for the other's collectives."""
        return self._agreed_stop if self.ranks.distributed else self.control.stop_requested

    def _pausing(self) -> bool:
        """Whether to stay paused. Under DDP, what the ranks agreed, for the same reason: a stop request
        also lifts a pause (Control), and one rank leaving the pause alone would train on by itself."""
        return self._agreed_pause if self.ranks.distributed else self.control.paused

    def _serve_requests(self, every_s: float = REQUEST_POLL_S) -> None:
        """Requests from `attach` or a STOP file (rank 0 holds the folder), acknowledged on every screen."""
        if self.run_dir is None or time.monotonic() - self._last_poll < every_s:
            return
        self._last_poll = time.monotonic()
        requests, said = self.run_dir.take_requests()
        for line in said:
            self.emit(ev.Notice(line, "warning"))
        for request in requests:
            self.control.apply(request.command, request.sender)
            self.emit(ev.ControlAck(request.command, request.sender))

    def _at_boundary(self, epoch: int, evaluate_now: bool) -> bool:
        """Serve pause and evaluate-now requests; False when the run must stop here."""
        if evaluate_now and not self._stopping():
            self._requested_evaluation()
            if not self._pausing():
                self._state(RunState.TRAINING)
        if self._pausing() and not self._stopping():
            self._state(RunState.PAUSED)
            while self._pausing() and not self._stopping():
                self.control.wait_while_paused()
                self._serve_requests(every_s=0)
                if self.ranks.distributed:
                    _, _, evaluate_now = self._agree()  # every rank goes round this loop together
                else:
                    evaluate_now = self.control.take_evaluation_request()
                if evaluate_now:
                    self._requested_evaluation()
                    self._state(RunState.PAUSED)
            if not self._stopping():
                self._state(RunState.TRAINING)
        if self._stopping():
            self._stop(epoch)
            return False
        return True

    def _requested_evaluation(self) -> None:
        """The full report; under DDP (where the report is not sharded) loss and accuracy, all ranks."""
        if self.ranks.distributed:
            self.evaluate("val", requested=True)
        else:
            self._write_report("val")
