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

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alexnet_tui.engine.checkpoint import save_checkpoint

_PLAIN = (str, int, float, bool, type(None))


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

    # ---- the caller's (training) thread ---------------------------------------------------------
    def stage(self, payload: dict[str, Any], path: str | Path, on_failure: Callable[[], None] | None = None) -> Path:
        """Copy the payload's tensors now, so training may go on changing the originals; written at submit()."""
        if not self._staged:
            self.wait()  # the previous save: its buffers are about to be reused
        self._staged.append(_File(self._copy(payload, ()), Path(path), on_failure))
        return Path(path)

    def submit(self) -> None:
        """Start writing the staged files, in the order they were staged, in a background thread."""
        if not self._staged:
            return
        ready = []
        for device in self._devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))  # after the non_blocking copies on that stream
            ready.append(event)
        self._files, self._staged = self._staged, []
        self._forget_snapshot()
        # Not a daemon: a checkpoint already announced is finished even if the main thread ends first.
        self._thread = threading.Thread(target=self._write, args=(self._files, ready), name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        """Block until the save in progress is on disk. If it failed, call the on_failure of every file
        it left unwritten and raise its error (CheckpointSaveError for a disk or permission problem)."""
        staged, self._staged = self._staged, []  # never submitted (an error came in between): dropped
        self._forget_snapshot()
        if self._thread is not None:
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

    def release(self) -> None:
        """Free the snapshot buffers (after wait(): the trainer is closing)."""
        self._buffers.clear()

    def _forget_snapshot(self) -> None:
        self._memo.clear()
        self._keys_used.clear()
        self._devices.clear()

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
            buffer = _empty(tensor)
            if key not in self._keys_used:
                self._buffers[key] = buffer
        self._keys_used.add(key)
        buffer.copy_(tensor, non_blocking=tensor.is_cuda)
        if tensor.is_cuda:
            self._devices.add(tensor.device)
        self._memo[source] = (tensor, buffer)
        return buffer

    # ---- the writer thread ----------------------------------------------------------------------
    def _write(self, files: list[_File], ready: list[Any]) -> None:
        index = 0
        try:
            for event in ready:
                event.synchronize()  # the device-to-host copies have landed in the pinned buffers
            for index, file in enumerate(files):  # noqa: B007 - read in the except clause
                save_checkpoint(file.payload, file.path)
        except BaseException as error:  # noqa: BLE001 - handed to the training thread, raised by wait()
            self._failure = (error, index)


def _empty(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor with the source's layout when it is a dense one (channels_last weights stay so)."""
    dense = tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last))
    if dense:
        return torch.empty_strided(
            tensor.shape, tensor.stride(), dtype=tensor.dtype, device="cpu", pin_memory=tensor.is_cuda
        )
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=tensor.is_cuda)
