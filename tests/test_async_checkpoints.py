"""Checkpoints off the hot path: snapshotted on the training thread, written by a background one,
with the guarantees of a synchronous save (durable on stop, failures reported and retried)."""

from __future__ import annotations

import builtins
import errno
import math
import os
import threading
from pathlib import Path

import pytest
import torch

from alexnet_tui.engine import RunOutcome, Trainer
from alexnet_tui.engine import checkpoint as checkpoint_module
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import CheckpointSaveError, load_checkpoint, save_checkpoint
from alexnet_tui.engine.checkpoint_writer import CheckpointWriter
from tests.conftest import tiny_config

REAL_SAVE = torch.save


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_saves_are_written_off_the_training_thread_from_a_snapshot(tmp_path, monkeypatch):
    """last.pt holds the weights of the moment its epoch ended, not those trained while it was
    written (the first is on disk before epoch 1's line; the ones after are written as training goes on)."""
    savers: list[threading.Thread] = []
    at_epoch_end: dict[int, dict[str, torch.Tensor]] = {}
    written: dict[int, dict[str, torch.Tensor]] = {}
    bests: list[int] = []
    next_epoch_trained = threading.Event()
    trainer: Trainer

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.EpochEnd):
            at_epoch_end[event.epoch] = weights(trainer.run.model)
        elif isinstance(event, ev.BestCheckpoint):
            bests.append(event.epoch)
        elif isinstance(event, ev.BatchEnd) and event.epoch == 3:
            next_epoch_trained.set()

    def late_save(obj, file, *args, **kwargs):
        savers.append(threading.current_thread())
        if Path(file.name).name.startswith(".last.pt") and obj["epoch"] == 3:
            # Write epoch 2's last.pt only once epoch 3 has changed the weights in place.
            assert next_epoch_trained.wait(30)
            written[2] = {name: tensor.clone() for name, tensor in obj["model"].items()}
        return REAL_SAVE(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", late_save)
    monkeypatch.setattr("alexnet_tui.engine.trainer.REPORT_INTERVAL_S", 0.0)  # BatchEnd after each batch
    trainer = Trainer(tiny_config(tmp_path, epochs=3), [on_event])
    assert trainer.fit() is RunOutcome.FINISHED
    assert len(savers) == 3 + len(bests)  # last.pt after each epoch, best.pt after each better one
    assert threading.current_thread() not in savers
    assert set(written[2]) == set(at_epoch_end[2])
    assert all(torch.equal(written[2][name], at_epoch_end[2][name]) for name in at_epoch_end[2])
    later = weights(trainer.run.model)
    assert any(not torch.equal(later[name], at_epoch_end[2][name]) for name in later)  # training did move on
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert all(torch.equal(best["model"][name], at_epoch_end[best["best_epoch"]][name]) for name in best["model"])


def test_the_first_last_pt_is_on_disk_before_epoch_1_is_said(tmp_path):
    """A kill -9 between epoch 1's line and a paced first write left best.pt and no last.pt: a run
    --resume could not continue."""
    seen: list[bool] = []
    trainer = Trainer(
        tiny_config(tmp_path, epochs=2),
        [
            lambda event: (
                seen.append((tmp_path / "run" / "last.pt").exists()) if isinstance(event, ev.EpochEnd) else None
            )
        ],
    )
    assert trainer.fit() is RunOutcome.FINISHED
    trainer.close()
    assert seen[0] is True


def test_a_graceful_stop_names_a_last_pt_that_is_on_disk(tmp_path, monkeypatch):
    seen: list[tuple] = []
    trainer: Trainer

    def slow_save(obj, file, *args, **kwargs):
        threading.Event().wait(0.2)  # a slow disk: a Stopped event sent before the write would be early
        return REAL_SAVE(obj, file, *args, **kwargs)

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.BatchEnd) and (event.epoch, event.batch) == (2, 2):
            trainer.control.request_stop("test")
        elif isinstance(event, ev.Stopped):
            saved = load_checkpoint(event.last_checkpoint)  # right now, in the subscriber
            seen.append((saved["epoch"], saved["batch"], event.epoch, event.batch))

    monkeypatch.setattr(torch, "save", slow_save)
    trainer = Trainer(tiny_config(tmp_path, epochs=3), [on_event])
    assert trainer.fit() is RunOutcome.STOPPED
    assert len(seen) == 1 and seen[0][:2] == seen[0][2:] and seen[0][0] == 2  # the file is the stop's own
    trainer.close()


@pytest.mark.parametrize("epochs", [1, 2], ids=["final-epoch", "surfaces-next-epoch"])
def test_a_failed_background_save_fails_the_run_and_a_retry_saves(tmp_path, monkeypatch, epochs):
    """Epoch 1's best.pt fails once: with 2 epochs it is found at epoch 2's end, with 1 at once.
    Either way the run fails "kept in memory", best_val_loss is put back, and a retry saves."""
    events: list[ev.Event] = []
    calls = []

    def full_once(obj, file, *args, **kwargs):
        calls.append(Path(file.name).name)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return REAL_SAVE(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_once)
    trainer = Trainer(tiny_config(tmp_path, epochs=epochs), [events.append])
    assert trainer.fit() is RunOutcome.FAILED
    assert calls[0].startswith(".best.pt")
    failure = [e for e in events if isinstance(e, ev.Failed)][0].message
    assert "No space left on device" in failure and "kept in memory" in failure
    assert math.isinf(trainer.progress.best_val_loss) and trainer.progress.best_epoch is None
    assert not (tmp_path / "run" / "best.pt").exists()
    assert trainer.fit() is RunOutcome.FINISHED
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best_epoch"] == epochs and best["best_val_loss"] == trainer.progress.best_val_loss
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == epochs + 1
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")] == [".lock"]
    trainer.close()


def test_the_snapshot_is_a_copy_and_saves_go_one_after_another(tmp_path):
    writer = CheckpointWriter()
    live = {"model": {"w": torch.zeros(1000)}, "optimizer": {"state": {0: {"exp_avg": torch.zeros(10)}}}}
    writer.stage({**live, "architecture": "x"}, tmp_path / "best.pt")
    writer.stage({**live, "epoch": 2}, tmp_path / "last.pt")
    live["model"]["w"] += 1  # training goes on, in place
    live["optimizer"]["state"][0]["exp_avg"] += 1
    writer.submit()
    writer.stage({"model": live["model"]}, tmp_path / "next.pt")  # waits for the save before it
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    writer.submit()
    writer.wait()
    first = torch.load(tmp_path / "last.pt", weights_only=True)
    assert not first["model"]["w"].any() and not first["optimizer"]["state"][0]["exp_avg"].any()
    assert torch.load(tmp_path / "next.pt", weights_only=True)["model"]["w"].eq(1).all()


def test_a_failed_write_undoes_what_it_recorded_for_it_and_those_after_it(tmp_path):
    writer = CheckpointWriter()
    undone: list[str] = []
    missing = tmp_path / "gone" / "best.pt"  # no such folder: the write fails
    writer.stage({"w": torch.ones(3)}, missing, on_failure=lambda: undone.append("best"))
    writer.stage({"w": torch.ones(3)}, tmp_path / "last.pt", on_failure=lambda: undone.append("last"))
    writer.submit()
    with pytest.raises(CheckpointSaveError, match="could not save"):
        writer.wait()
    assert undone == ["best", "last"] and not (tmp_path / "last.pt").exists()
    writer.wait()  # reported once


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_really_full_disk_is_reported_as_such(tmp_path, monkeypatch):
    """torch.save turns a failed write(2) into a RuntimeError; the OSError behind it is what is said."""
    monkeypatch.setattr(checkpoint_module, "open", lambda *_a, **_k: builtins.open("/dev/full", "wb"), raising=False)
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        save_checkpoint({"w": torch.zeros(100_000)}, tmp_path / "best.pt")
    assert not list(tmp_path.iterdir())


def test_saves_one_after_another_write_each_snapshot_in_the_source_layout(tmp_path):
    """The snapshot buffers are reused from one save to the next: the second file holds the second
    snapshot, channels_last weights stay so."""
    writer = CheckpointWriter()
    live = {"model": {"w": torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)}}
    writer.stage(live, tmp_path / "first.pt")
    writer.submit()
    live["model"]["w"] += 1
    writer.stage(live, tmp_path / "second.pt")
    writer.submit()
    writer.wait()
    first = torch.load(tmp_path / "first.pt", weights_only=True)["model"]["w"]
    saved = torch.load(tmp_path / "second.pt", weights_only=True)["model"]["w"]
    assert torch.equal(saved, live["model"]["w"]) and torch.equal(first + 1, saved)
    assert saved.is_contiguous(memory_format=torch.channels_last)


def test_the_first_and_the_last_saves_are_waited_for_and_those_between_are_not(tmp_path, monkeypatch):
    """The first: until a last.pt is on disk a kill -9 leaves nothing to resume. The last: the final
    report reads best.pt. Between, the write overlaps the next epoch."""
    from alexnet_tui.engine.saving import RunCheckpoints

    waited: list[bool] = []
    real_save_last = RunCheckpoints.save_last

    def recording(self: RunCheckpoints, wait: bool = True) -> Path:
        waited.append(wait)
        return real_save_last(self, wait)

    monkeypatch.setattr(RunCheckpoints, "save_last", recording)
    with Trainer(tiny_config(tmp_path, epochs=3), []) as trainer:
        assert trainer.fit() is RunOutcome.FINISHED
    assert waited == [True, False, True]
