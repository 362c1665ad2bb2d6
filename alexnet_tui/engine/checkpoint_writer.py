"""Checkpoints written off the training thread: a CPU snapshot taken on the caller's thread, the write
(save_checkpoint: temp file, fsync, os.replace) done by one background thread, as Lightning's
AsyncCheckpointIO and PyTorch DCP's async_save do.

    writer.stage(best_payload, run / "best.pt", on_failure=undo)  # copies the tensors now
    writer.stage(last_payload, run / "last.pt")                   # shared tensors are copied once
    writer.submit()                                               # written in order, in the background
    ...
    writer.wait()   # blocks until on disk; raises the write's error here, on the training thread

One save at a time: the first stage() of a save waits for the previous one (and raises its failure),
so at most one snapshot is alive and its buffers can be reused. A file that could not be written
(and the ones after it in the same save, which are skipped) calls its on_failure on the waiting
thread before the error is raised, so the caller can undo what it recorded for it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alexnet_tui.engine.checkpoint import save_checkpoint

_PLAIN = (str, int, float, bool, type(None))
# The writer's niceness (Linux: per thread). Its CPU work (pickling, CRC32, copying ~1 GB into the page
# cache) then goes into the gaps of the training threads over a few steps, not into the first step of
# the next epoch all at once; it still has a whole epoch to finish before the next save waits for it.
WRITER_NICENESS = 10


@dataclass
class _File:
    payload: dict[str, Any]
    path: Path
    on_failure: Callable[[], None] | None = None


class CheckpointWriter:
    """Snapshots payloads and writes them in one background thread; see the module's docstring."""

    def __init__(self) -> None:
        # Reused across saves, keyed by where the tensor sits in its payload (("model", "features.0.weight"),
        # ("optimizer", "state", 3, "exp_avg")): no new 700 MB to allocate and fault in at every save; pinned
        # when the source is on CUDA so the copy is a fast, asynchronous DMA.
        self._buffers: dict[tuple, torch.Tensor] = {}
        self._staged: list[_File] = []
        # This save's copies by source storage, so a tensor in two payloads is copied once; the source is
        # held too, so that its address cannot be reused by another tensor before the save is submitted.
        self._memo: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._keys_used: set[tuple] = set()
        self._devices: set[torch.device] = set()  # CUDA devices copied from, synchronised by the writer
        self._thread: threading.Thread | None = None
        self._files: list[_File] = []  # the save being written
        self._failure: tuple[BaseException, int] | None = None  # (error, index of the file that failed)
        self._hurry = threading.Event()  # set by wait(): stop pacing the save in progress

    # ---- the caller's (training) thread ---------------------------------------------------------
    def stage(self, payload: dict[str, Any], path: str | Path, on_failure: Callable[[], None] | None = None) -> Path:
        """Copy the payload's tensors now, so training may go on changing the originals; written at submit()."""
        if not self._staged:
            self.wait()  # the previous save: its buffers are about to be reused
        self._staged.append(_File(self._copy(payload, ()), Path(path), on_failure))
        return Path(path)

    def submit(self, spread_s: float = 0.0) -> None:
        """Start writing the staged files, in the order they were staged, in a background thread,
        spread over about spread_s seconds (see _Pacer); wait() ends the pacing."""
        if not self._staged:
            return
        ready = []
        for device in self._devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))  # after the non_blocking copies on that stream
            ready.append(event)
        shapes: list[tuple] = []
        for file in self._staged:
            self._shapes(file.payload, (), shapes)
        total = sum(shape.numel() * dtype.itemsize for _, shape, _, dtype, _, _ in shapes)
        self._hurry = threading.Event()
        pacer = _Pacer(total, spread_s, self._hurry) if spread_s > 0 else None
        self._files, self._staged = self._staged, []
        self._memo.clear()
        self._keys_used.clear()
        self._devices.clear()
        # Not a daemon: a checkpoint already announced is finished even if the main thread ends first.
        self._thread = threading.Thread(target=self._write, args=(self._files, ready, pacer), name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        """Block until the save in progress is on disk. If it failed, call the on_failure of every file
        it left unwritten and raise its error (CheckpointSaveError for a disk or permission problem)."""
        staged, self._staged = self._staged, []  # never submitted (an error came in between): dropped
        self._memo.clear()
        self._keys_used.clear()
        self._devices.clear()
        if self._thread is not None:
            self._hurry.set()  # someone waits: the rest at full speed
            self._thread.join()
            self._thread = None
        files, self._files = self._files, []
        failure, self._failure = self._failure, None
        unwritten = [*(files[failure[1] :] if failure else []), *staged]
        for file in unwritten:
            if file.on_failure is not None:
                file.on_failure()
        if failure is not None:
            raise failure[0]

    def reserve_after_step(self, optimizer: torch.optim.Optimizer, make_payload: Callable[[], dict]) -> None:
        """After the optimizer's next step (when Adam's moments exist), reserve() for make_payload()."""

        def once(*_args: object) -> None:
            handle.remove()
            self.reserve(make_payload())

        handle = optimizer.register_step_post_hook(once)

    def reserve(self, payload: dict[str, Any]) -> None:
        """Make (and fault in, or pin) the buffers for a payload shaped like the coming saves, in the
        background, so that the first save copies into ready memory instead of paying for it (~0.2 s on
        CPU, more to pin on CUDA) between two epochs. Skipped while a save is under way or once made."""
        if self._staged or self._thread is not None or self._buffers:
            return
        shapes: list[tuple] = []
        self._shapes(payload, (), shapes)
        self._thread = threading.Thread(target=self._allocate, args=(shapes,), name="checkpoint-writer")
        self._thread.start()

    def release(self) -> None:
        """Free the snapshot buffers (after wait(): the trainer is closing)."""
        self._buffers.clear()

    # ---- the snapshot ---------------------------------------------------------------------------
    def _copy(self, value: Any, key: tuple) -> Any:
        """The payload with every tensor copied to the CPU and every container rebuilt."""
        if isinstance(value, torch.Tensor):
            return self._copy_tensor(value, key)
        if isinstance(value, dict):
            return {name: self._copy(item, (*key, name)) for name, item in value.items()}
        if isinstance(value, list | tuple):
            if all(isinstance(item, _PLAIN) for item in value):  # the split's file names: no walk needed
                return type(value)(value)
            return type(value)(self._copy(item, (*key, index)) for index, item in enumerate(value))
        return value  # numbers, strings, None: immutable

    def _copy_tensor(self, tensor: torch.Tensor, key: tuple) -> torch.Tensor:
        tensor = tensor.detach()
        source = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tensor.dtype,
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.device,
        )
        if source in self._memo:  # best.pt's weights are last.pt's: one copy for both
            return self._memo[source][1]
        buffer = self._buffers.get(key)
        fits = buffer is not None and (buffer.shape, buffer.stride(), buffer.dtype) == (
            tensor.shape,
            tensor.stride(),
            tensor.dtype,
        )
        if key in self._keys_used or not fits:
            buffer = _empty(tensor.shape, tensor.stride(), tensor.dtype, tensor.is_cuda, _dense(tensor))
            if key not in self._keys_used:
                self._buffers[key] = buffer
        self._keys_used.add(key)
        buffer.copy_(tensor, non_blocking=tensor.is_cuda)
        if tensor.is_cuda:
            self._devices.add(tensor.device)
        self._memo[source] = (tensor, buffer)
        return buffer

    def _shapes(self, value: Any, key: tuple, out: list[tuple]) -> None:
        if isinstance(value, torch.Tensor):
            out.append((key, value.shape, value.stride(), value.dtype, value.is_cuda, _dense(value)))
        elif isinstance(value, dict):
            for name, item in value.items():
                self._shapes(item, (*key, name), out)
        elif isinstance(value, list | tuple) and not all(isinstance(item, _PLAIN) for item in value):
            for index, item in enumerate(value):
                self._shapes(item, (*key, index), out)

    # ---- the writer thread ----------------------------------------------------------------------
    def _allocate(self, shapes: list[tuple]) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        try:
            for key, shape, stride, dtype, pin, dense in shapes:
                self._buffers[key] = _empty(shape, stride, dtype, pin, dense).zero_()
        except Exception:  # noqa: BLE001 - only an optimisation: the save makes what is missing
            return

    def _write(self, files: list[_File], ready: list[Any], pacer: _Pacer | None) -> None:
        index = 0
        with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: full priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        try:
            for event in ready:
                event.synchronize()  # the device-to-host copies have landed in the pinned buffers
            for index, file in enumerate(files):  # noqa: B007 - read in the except clause
                save_checkpoint(file.payload, file.path, pacer.written if pacer else None)
        except BaseException as error:  # noqa: BLE001 - handed to the training thread, raised by wait()
            self._failure = (error, index)


class _Pacer:
    """Spreads a save's bytes evenly over `seconds`: on a machine whose cores all train, the write's
    CPU work (copies into the page cache, the disk's writeback) then costs each step of the next epoch
    a little instead of its first steps a lot (measured here: +0.3-0.5 s on the first step unpaced).
    The trainer asks for 3/4 of its fastest epoch's training time (at most 30 s): done before the next;
    the hurry event (wait(): a stop, the end of the run, the next save) ends the pacing at once."""

    def __init__(self, total_bytes: int, seconds: float, hurry: threading.Event) -> None:
        self.rate = max(total_bytes, 1) / seconds  # bytes a second
        self.hurry = hurry
        self.done = 0
        self.started = time.monotonic()

    def written(self, count: int) -> None:
        self.done += count
        ahead = self.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            self.hurry.wait(ahead)  # a sleep that wait() cuts short


def _dense(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last))


def _empty(shape: torch.Size, stride: tuple[int, ...], dtype: torch.dtype, pin: bool, dense: bool) -> torch.Tensor:
    """A CPU tensor with the source's layout when it is a dense one (channels_last weights stay so)."""
    if dense:
        return torch.empty_strided(shape, stride, dtype=dtype, device="cpu", pin_memory=pin)
    return torch.empty(shape, dtype=dtype, device="cpu", pin_memory=pin)
