import math
import os
import threading

import pytest
import torch

from alexnet_tui.engine import Control, RunOutcome, RunState, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from alexnet_tui.errors import UsageError
from tests.conftest import stop_at, tiny_config


def names(events: list[ev.Event]) -> list[str]:
    return [event.name for event in events]


def test_fit_emits_the_run_and_writes_checkpoints(tmp_path):
    events: list[ev.Event] = []
    trainer = Trainer(tiny_config(tmp_path), [events.append])
    assert trainer.fit() is RunOutcome.FINISHED
    sequence = names(events)
    assert sequence[:3] == ["state", "run_prepared", "run_started"] and events[0].state is RunState.PREPARING
    assert sequence[-2:] == ["finished", "state"] and events[-1].state is RunState.FINISHED
    batches = [e for e in events if isinstance(e, ev.BatchEnd)]
    train_images = len(trainer.data.train)
    assert train_images == 39  # 13 of each demo class; 3 held out per class
    assert len(batches) == 2 * 5  # batches of 8, two epochs
    assert all(0 <= b.running_acc <= 1 and b.images_per_sec > 0 for b in batches)
    epochs = [e for e in events if isinstance(e, ev.EpochEnd)]
    assert [e.epoch for e in epochs] == [1, 2]
    assert math.isclose(
        epochs[0].train_loss,
        sum(b.loss * min(8, train_images - 8 * i) for i, b in enumerate(batches[:5])) / train_images,
        rel_tol=1e-6,
    )
    best = [e for e in events if isinstance(e, ev.BestCheckpoint)]
    assert best[0].previous == math.inf and best[0].message.startswith("val_loss has been improved from inf to")
    final = [e for e in events if isinstance(e, ev.EvaluationEnd)][-1]
    assert final.split == "test" and final.checkpoint.endswith("best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 3 and last["class_names"] == ["checks", "spots", "stripes"]
    assert last["num_classes"] == 3 and "optimizer" in last
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["best_epoch"] in (1, 2)


def test_stop_from_another_thread_saves_state_and_fit_goes_on(tmp_path, per_batch_reports):
    control = Control()
    events: list[ev.Event] = []

    def stop_after_two_batches(event: ev.Event) -> None:
        events.append(event)
        if isinstance(event, ev.BatchEnd) and event.batch == 2 and event.epoch == 1:
            asking = threading.Thread(target=control.request_stop)
            asking.start()
            asking.join()

    trainer = Trainer(tiny_config(tmp_path, epochs=1), [stop_after_two_batches], control)
    assert trainer.fit() is RunOutcome.STOPPED
    stopped = [e for e in events if isinstance(e, ev.Stopped)][0]
    assert stopped.batch == 2  # the next batch boundary after the request
    saved = load_checkpoint(stopped.last_checkpoint)
    assert (saved["epoch"], saved["batch"]) == (1, stopped.batch)
    events.clear()
    assert trainer.fit() is RunOutcome.FINISHED
    assert [e.batch for e in events if isinstance(e, ev.BatchEnd)][0] == stopped.batch + 1


def test_pause_holds_the_batches_until_resume(tmp_path, per_batch_reports):
    control = Control()
    events: list[ev.Event] = []
    paused = threading.Event()

    def subscriber(event: ev.Event) -> None:
        events.append(event)
        if isinstance(event, ev.BatchEnd) and event.batch == 1 and event.epoch == 1:
            control.pause()
        if isinstance(event, ev.StateChanged) and event.state == "paused":
            paused.set()

    trainer = Trainer(tiny_config(tmp_path, epochs=1), [subscriber], control)
    worker = threading.Thread(target=trainer.fit)
    worker.start()
    assert paused.wait(60)
    count = len([e for e in events if isinstance(e, ev.BatchEnd)])
    worker.join(0.5)
    assert len([e for e in events if isinstance(e, ev.BatchEnd)]) == count and worker.is_alive()
    control.request_evaluation()  # evaluate while paused
    control.resume()
    worker.join(120)
    assert not worker.is_alive()
    assert names(events).count("evaluation") >= 2


def test_evaluate_now_during_training(tmp_path, per_batch_reports):
    control = Control()
    events: list[ev.Event] = []

    def subscriber(event: ev.Event) -> None:
        events.append(event)
        if isinstance(event, ev.BatchEnd) and event.batch == 1:
            control.request_evaluation()

    Trainer(tiny_config(tmp_path, epochs=1), [subscriber], control).fit()
    splits = [e.split for e in events if isinstance(e, ev.EvaluationEnd)]
    assert splits == ["val", "val", "test"]


def test_resume_matches_an_uninterrupted_run(tmp_path, per_batch_reports):
    whole: list[ev.Event] = []
    with Trainer(tiny_config(tmp_path, out=str(tmp_path / "whole")), [whole.append]) as trainer:
        trainer.fit()
    control = Control()
    first: list[ev.Event] = []
    with Trainer(tiny_config(tmp_path, out=str(tmp_path / "cut")), [stop_at(2, 2, control, first)], control) as trainer:
        trainer.fit()
    second: list[ev.Event] = []
    resumed = tiny_config(tmp_path, out=None, resume=str(tmp_path / "cut"))
    assert Trainer(resumed, [second.append]).fit() is RunOutcome.FINISHED
    whole_epochs = [e.to_json() for e in whole if isinstance(e, ev.EpochEnd)]
    cut_epochs = [e.to_json() for e in first + second if isinstance(e, ev.EpochEnd)]
    for a, b in zip(whole_epochs, cut_epochs, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    weights_whole = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    weights_cut = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.allclose(weights_whole[k], weights_cut[k], atol=1e-6) for k in weights_whole)


def test_nan_loss_fails_clearly_and_keeps_the_best(tmp_path):
    events: list[ev.Event] = []
    trainer = Trainer(tiny_config(tmp_path, epochs=3), [events.append])
    trainer.prepare()
    forward = trainer.run.model.forward

    def poisoned(images):
        out = forward(images)
        return out * float("nan") if trainer.position().epoch == 2 else out

    trainer.run.model.forward = poisoned
    assert trainer.fit() is RunOutcome.FAILED
    failure = [e for e in events if isinstance(e, ev.Failed)][0]
    assert "loss became nan" in failure.message and "--lr" in failure.message
    assert load_checkpoint(tmp_path / "run" / "best.pt")["best_epoch"] == 1


def test_an_existing_run_is_never_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"precious")
    with pytest.raises(UsageError, match="already holds a run"):
        Trainer(tiny_config(tmp_path)).prepare()
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"precious"


def test_checkpoints_refuse_pickles_and_foreign_files(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    class Shell:  # the classic: os.system, which torch blocks by module and words otherwise
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"architecture": "x", "payload": Boom()}, evil)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(evil)
    torch.save({"architecture": "x", "payload": Shell()}, evil)
    with pytest.raises(CheckpointError, match=r"could run code, not just weights \(.*system"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not an alexnet-tui checkpoint"):
        load_checkpoint(foreign)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")


def test_resume_refuses_another_image_size(tmp_path):
    with Trainer(tiny_config(tmp_path, epochs=1)) as trainer:
        trainer.prepare()
        trainer.save_last()
    with pytest.raises(CheckpointError, match="--image-size 67, not 96"):
        Trainer(tiny_config(tmp_path, image_size=96, out=None, resume=str(tmp_path / "run"))).prepare()


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint({"a": torch.ones(2)}, target)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_the_full_size_network_trains_and_saves(tmp_path):
    """The tutorial's own network (width 1, 58M parameters at 67 px) through one short fit."""
    trainer = Trainer(tiny_config(tmp_path, width=1.0, epochs=1, limit_batches=1))
    assert trainer.fit() is RunOutcome.FINISHED
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["width"] == 1.0 and saved["model"]["classifier.1.weight"].shape == (4096, 9216)
    trainer.close()


def test_resume_refuses_another_width(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    trainer.prepare()
    trainer.save_last()
    trainer.close()
    with pytest.raises(CheckpointError, match="made for --width 0.0625, not 1.0"):
        Trainer(tiny_config(tmp_path, width=1.0, out=None, resume=str(tmp_path / "run"))).prepare()


def test_nan_only_in_validation_fails_the_run_rather_than_name_a_best_pt_never_written(tmp_path):
    events: list[ev.Event] = []
    trainer = Trainer(tiny_config(tmp_path, epochs=2, lr=1e10, stop_on_nan=False), [events.append])
    assert trainer.fit() is RunOutcome.FAILED
    trainer.close()
    failure = [event for event in events if isinstance(event, ev.Failed)][0].message
    assert "no best.pt was saved" in failure and "try a lower --lr" in failure
    assert not (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    assert not any(isinstance(event, ev.Finished) for event in events)
