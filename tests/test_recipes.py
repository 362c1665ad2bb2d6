"""The recipe beyond the tutorial's: --schedule, --patience, --tta, --augment, --weight-decay, --label-smoothing,
and how they are recorded and said."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alexnet_tui.cli import main
from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Control, RunOutcome, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.augment import augmented_input
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.engine.recipe import LearningRate, scheduled_lr
from alexnet_tui.engine.training_state import resume_changes
from alexnet_tui.errors import UsageError
from alexnet_tui.metrics import read_metrics
from tests.conftest import TINY_ARGS, stop_at, tiny_config


# ---- schedules, early stopping, TTA, augmentation --------------------------------------------------------
def test_schedule_shapes():
    cosine = [scheduled_lr("cosine", 1.0, step, 100, 10) for step in range(100)]
    assert cosine[0] == pytest.approx(1 / 11) and cosine[9] == pytest.approx(10 / 11) and cosine[10] == 1.0
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:], strict=False)) and 0 < cosine[-1] < 0.001
    onecycle = [scheduled_lr("onecycle", 1.0, step, 100, 10) for step in range(100)]
    assert onecycle[0] == pytest.approx(1 / 25) and max(onecycle) == 1.0
    assert onecycle[-1] == pytest.approx(1 / 25 / 1e4)
    assert scheduled_lr("none", 0.5, 7, 100, 10) == 0.5


def scheduled_run(tmp_path: Path, kind: str) -> tuple[TrainConfig, list[float], list[ev.Event]]:
    """An uninterrupted run's learning rates, batch by batch."""
    options = dict(schedule=kind, warmup_epochs=0.5, limit_batches=2, lr=1e-3, amp="off")
    events: list[ev.Event] = []
    with Trainer(tiny_config(tmp_path, out=str(tmp_path / kind), **options), [events.append]) as trainer:
        assert trainer.fit() is RunOutcome.FINISHED
    lrs = [e.lr for e in events if isinstance(e, ev.BatchEnd)]
    schedule = LearningRate.for_run(trainer.config, 2)
    assert lrs == [schedule.at(step) for step in range(4)] and len(set(lrs)) == 4
    return trainer.config, lrs, events


def test_cosine_lrs_are_per_batch_in_metrics(tmp_path, per_batch_reports):
    config, lrs, _ = scheduled_run(tmp_path, "cosine")
    assert lrs[:2] == pytest.approx([1e-3 / 2, 1e-3])  # warm-up: half an epoch of 2 batches is 1 step
    toml = (tmp_path / "cosine" / "config.toml").read_text()
    assert 'schedule = "cosine"' in toml and "warmup_epochs = 0.5" in toml


def test_onecycle_lrs_go_on_exactly_after_a_resume_mid_epoch(tmp_path, per_batch_reports):
    kind = "onecycle"
    options = dict(schedule=kind, warmup_epochs=0.5, limit_batches=2, lr=1e-3, amp="off")
    _, lrs, whole = scheduled_run(tmp_path, kind)
    assert lrs[0] == pytest.approx(1e-3 / 25) and lrs[1] == 1e-3 and lrs[3] == pytest.approx(1e-3 / 25 / 1e4)
    control = Control()
    first: list[ev.Event] = []
    with Trainer(
        tiny_config(tmp_path, out=str(tmp_path / "cut"), **options), [stop_at(2, 1, control, first)], control
    ) as cut:
        assert cut.fit() is RunOutcome.STOPPED
    assert load_checkpoint(tmp_path / "cut")["schedule"] == {"step": 3}
    second: list[ev.Event] = []
    with Trainer(tiny_config(tmp_path, out=None, resume=str(tmp_path / "cut"), **options), [second.append]) as again:
        assert again.fit() is RunOutcome.FINISHED
    assert [e.lr for e in first + second if isinstance(e, ev.BatchEnd)] == lrs
    for a, b in zip(
        [e for e in whole if isinstance(e, ev.EpochEnd)],
        [e for e in first + second if isinstance(e, ev.EpochEnd)],
        strict=True,
    ):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-5)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)


def test_patience_stops_early_with_a_notice_and_reports_on_best(tmp_path, val_loss_never_improves):
    events: list[ev.Event] = []
    config = tiny_config(tmp_path, epochs=6, patience=1, limit_batches=1, amp="off")
    with Trainer(config, [events.append]) as trainer:
        assert trainer.fit() is RunOutcome.FINISHED
    assert [e.epoch for e in events if isinstance(e, ev.EpochEnd)] == [1, 2]
    notice = [e.message for e in events if isinstance(e, ev.Notice) and "early stopping" in e.message]
    assert notice == ["early stopping: val_loss has not improved for 1 epoch(s) (best 1.00000 at epoch 1); "
                      "finishing with the final evaluation of best.pt"]  # fmt: skip
    final = [e for e in events if isinstance(e, ev.EvaluationEnd)][-1]
    assert final.checkpoint.endswith("best.pt") and isinstance(events[-2], ev.Finished)


def test_tta_in_the_final_evaluation_and_in_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--amp", "off", "--tta", "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "[INFO] --tta: each image's prediction is averaged with its mirror image's" in out
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert {r["lr"] for r in records if r["event"] == "batch"} == {1e-4}  # every batch's rate, constant here
    final = [r for r in records if r["event"] == "evaluation"][-1]
    assert main(["evaluate", "--checkpoint", "run", "--tta"]) == 0
    with_tta = json.loads((tmp_path / "run" / "evaluation-test.json").read_text())
    assert "(--tta)" in capsys.readouterr().out and with_tta["tta"]
    assert with_tta["loss"] == pytest.approx(final["loss"], rel=1e-4)  # the same numbers both ways
    assert main(["evaluate", "--checkpoint", "run"]) == 0
    plain = json.loads((tmp_path / "run" / "evaluation-test.json").read_text())
    assert not plain["tta"] and plain["loss"] != pytest.approx(with_tta["loss"], rel=1e-6)


def test_augment_crops_on_the_device_from_a_larger_cache_and_is_deterministic(tmp_path, pet_folder, per_batch_reports):
    def first_loss(out: str) -> float:
        events: list[ev.Event] = []
        options = dict(augment=True, epochs=1, limit_batches=1, amp="off")
        config = tiny_config(tmp_path, data=str(pet_folder), out=out, **options)
        with Trainer(config, [events.append]) as trainer:
            assert trainer.fit() is RunOutcome.FINISHED
            assert trainer.data.train[0][0].shape == (3, 76, 76)  # round(67 * 256 / 227), cropped to 67 per batch
            assert trainer.data.val[0][0].shape == (3, 67, 67)
        return next(e.loss for e in events if isinstance(e, ev.BatchEnd))

    loss = first_loss(str(tmp_path / "a"))
    assert math.isfinite(loss) and first_loss(str(tmp_path / "b")) == loss
    images = torch.randint(0, 256, (4, 3, 76, 76), dtype=torch.uint8)
    plain = augmented_input(images, torch.device("cpu"), torch.zeros(4, dtype=torch.bool), 67, seed=5)
    mirrored = augmented_input(images, torch.device("cpu"), torch.ones(4, dtype=torch.bool), 67, seed=5)
    assert plain.shape == (4, 3, 67, 67) and torch.allclose(mirrored, plain.flip(3), atol=1e-4)


def test_the_recipe_is_one_line_of_options_in_the_log():
    from alexnet_tui.config import recipe_text

    strong = TrainConfig(augment=True, schedule="onecycle", warmup_epochs=3, lr=2e-4, weight_decay=0.05,
                         label_smoothing=0.1, epochs=30, tta=True)  # fmt: skip
    assert recipe_text(strong.to_dict()) == (
        "--lr 0.0002 --batch-size 32 --augment --schedule onecycle --warmup-epochs 3 --weight-decay 0.05 "
        "--label-smoothing 0.1 --tta"
    )
    tutorial = recipe_text(TrainConfig().to_dict())
    assert tutorial == "--lr 0.0001 --batch-size 32 (Adam, a constant rate, no augmentation)"


def test_recipe_options_are_recorded_and_the_optimizer_follows_weight_decay(tmp_path):
    with Trainer(tiny_config(tmp_path, weight_decay=0.05, label_smoothing=0.1)) as trainer:
        trainer.prepare()
        assert type(trainer.run.optimizer).__name__ == "AdamW" and trainer.run.optimizer.defaults["fused"]
        assert trainer.run.criterion.label_smoothing == 0.1 and trainer.run.eval_criterion.label_smoothing == 0.0
    text = (tmp_path / "run" / "config.toml").read_text()
    assert "weight_decay = 0.05" in text and "label_smoothing = 0.1" in text and 'arch = "tutorial"' in text
    with pytest.raises(UsageError, match="--weight-decay 0.05 would change what this run is"):
        resume_changes(TrainConfig().to_dict(), TrainConfig(weight_decay=0.05))  # Adam -> AdamW
    assert resume_changes(TrainConfig().to_dict(), TrainConfig(label_smoothing=0.1)) == [
        "--label-smoothing 0.1 (was 0.0)"
    ]
