"""Runs that meet each other or their own past: a stop in the final report, two runs on one folder,
same-second default names, torn or failing metrics files, NaN in a watched file, extra outputs and
a last.pt from a machine with more GPUs."""

from __future__ import annotations

import errno
import json
import math
import os
from datetime import datetime
from pathlib import Path

import pytest
import torch
from textual.widgets import DataTable

from alexnet_tui.cli import main
from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Control, RunOutcome, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.engine.training_state import RunProgress, restore_training
from alexnet_tui.metrics import MetricsWriter, read_metrics
from alexnet_tui.model import AlexNet
from alexnet_tui.ui.app import AlexNetApp
from tests.conftest import TINY_ARGS, TINY_WIDTH, run_cli, tiny_config
from tests.test_ui import wait_for


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def files_in(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


# ---- 1. a stop during the final evaluation -----------------------------------------------------
def test_stop_in_final_evaluation_keeps_last_weights_and_resume_reports(
    tmp_path, monkeypatch, capsys, val_loss_never_improves
):
    """A stop during the final evaluation of best.pt must not overwrite last.pt with best.pt's weights
    (val_loss 1, 2, 3 by epoch: best.pt is epoch 1's, last.pt epoch 3's)."""
    run = tmp_path / "run"
    control = Control()
    events: list[ev.Event] = []
    at_final: dict[str, torch.Tensor] = {}

    def stop_in_final_evaluation(event: ev.Event) -> None:
        events.append(event)
        if isinstance(event, ev.EvaluationStarted) and event.split == "test":
            at_final.update(weights(run / "last.pt"))  # saved at the end of epoch 3
            control.request_stop("stop in the final report")

    with Trainer(tiny_config(tmp_path, epochs=3), [stop_in_final_evaluation], control) as trainer:
        assert trainer.fit() is RunOutcome.STOPPED
    assert [e.epoch for e in events if isinstance(e, ev.BestCheckpoint)] == [1]
    stopped = [e for e in events if isinstance(e, ev.Stopped)]
    assert len(stopped) == 1 and not [e for e in events if isinstance(e, ev.Finished)]
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 4 and last["best_epoch"] == 1
    assert at_final and same_weights(last["model"], at_final)
    assert not same_weights(last["model"], weights(run / "best.pt"))

    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "test loss:" in out and "best checkpoint:" in out and "finished in" in out
    assert same_weights(weights(run / "last.pt"), at_final)
    assert [r["event"] for r in read_metrics(run / "metrics.jsonl")][-2:] == ["finished", "state"]


# ---- 2. two runs on one folder, and default names ----------------------------------------------
def test_second_run_on_a_held_folder_is_refused_and_touches_nothing(tmp_path, monkeypatch, capsys):
    """Two runs with one --out (or --resume) are refused while the first holds it, in or out of process."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    with Trainer(tiny_config(tmp_path, epochs=1)) as first:
        first.prepare()  # holds the folder; no checkpoint written yet
        leftover = run / ".last.pt.tmp12345"  # as if the first run were mid-save
        leftover.write_bytes(b"half a checkpoint")
        before = files_in(run)

        assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", str(run)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
        assert "another run" in error and f"pid {os.getpid()}" in error

        other_process = run_cli("--no-ui", *TINY_ARGS, "--epochs", "1", "--out", str(run), cwd=tmp_path, timeout=120)
        assert other_process.returncode == 2, other_process.stderr
        assert "another run" in other_process.stderr and f"pid {os.getpid()}" in other_process.stderr
        assert files_in(run) == before and leftover.exists()

        assert first.fit() is RunOutcome.FINISHED
        held = files_in(run)
        assert main(["--no-ui", "--resume", str(run), "--epochs", "2"]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
        assert "another run" in error and f"pid {os.getpid()}" in error
        assert files_in(run) == held and leftover.exists()

    # Released: the run goes on, and what a killed run left behind is cleared now.
    assert main(["--no-ui", "--resume", str(run), "--epochs", "2"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert not leftover.exists()


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """The default runs/<timestamp> name must not collide for two runs started in the same second."""

    class SameSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2024, 5, 1, 12, 0, 0)

    monkeypatch.setattr("alexnet_tui.engine.run_dir.datetime", SameSecond)
    monkeypatch.chdir(tmp_path)
    with (
        Trainer(tiny_config(tmp_path, out=None)) as first,
        Trainer(tiny_config(tmp_path, out=None)) as second,
    ):
        first.prepare()
        second.prepare()
        assert first.position().run_dir == Path("runs/20240501-120000")
        assert second.position().run_dir == Path("runs/20240501-120000-2")
        assert (tmp_path / "runs/20240501-120000/config.toml").is_file()
        assert (tmp_path / "runs/20240501-120000-2/config.toml").is_file()


# ---- 3. smaller items --------------------------------------------------------------------------
def test_report_names_outputs_beyond_the_class_folders(tmp_path, monkeypatch, capsys):
    """--num-classes above the number of class folders: `evaluate` and `e` must not raise IndexError."""
    run = tmp_path / "run"
    with Trainer(tiny_config(tmp_path, epochs=1, num_classes=5)) as trainer:
        assert trainer.fit() is RunOutcome.FINISHED
        report = json.loads(trainer.evaluate_now("val").read_text())  # `e` in the TUI
    assert report["class_names"] == ["checks", "spots", "stripes", "output 3", "output 4"]
    assert len(report["confusion_matrix"]) == 5 and report["per_class"]["output 4"]["support"] == 0

    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    assert "output 3" in out and "output 4" in out and "report written to" in out


@pytest.mark.asyncio
async def test_watch_shows_nan_written_as_null(tmp_path, finished_run):
    """`watch` on a run whose metrics.jsonl holds NaN losses (written as null) must not raise."""
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        if record["event"] == "batch" and record["epoch"] == 1:
            record["loss"] = record["running_loss"] = None
        if record["event"] == "epoch" and record["epoch"] == 1:
            record["train_loss"] = record["val_loss"] = None
    run = tmp_path / "nan-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))

    events = [ev.from_json(record) for record in records]
    batch = next(e for e in events if isinstance(e, ev.BatchEnd))
    epoch = next(e for e in events if isinstance(e, ev.EpochEnd))
    for value in (batch.loss, batch.running_loss, epoch.train_loss, epoch.val_loss):
        assert isinstance(value, float) and math.isnan(value)

    app = AlexNetApp(TrainConfig(), attach=run, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        epochs = lambda: app.query_one("#epochs", DataTable).row_count  # noqa: E731
        await wait_for(pilot, lambda: epochs() == 3 and app.state == "finished", timeout=20)
        await pilot.press("q")
    assert app.return_value == 0


def test_writer_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    """A resume appending to metrics.jsonl after a torn last line must not fuse two records."""
    path = tmp_path / "metrics.jsonl"
    old = [ev.Notice("first").to_json(), ev.Notice("second").to_json()]
    whole = "".join(json.dumps(record) + "\n" for record in old)
    path.write_text(whole + json.dumps(ev.Notice("torn").to_json())[:15])
    writer = MetricsWriter(path)
    writer(ev.Notice("after the resume"))
    writer.close()
    assert [r["message"] for r in read_metrics(path)] == ["first", "second", "after the resume"]


class FullDisk:
    """The os module, as alexnet_tui.metrics sees it, on a disk that fills up."""

    def __init__(self, half_first: bool) -> None:
        self.half_first = half_first

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.half_first:
            self.half_first = False
            return os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_line_cut_by_a_full_disk_does_not_spoil_the_next(tmp_path, monkeypatch):
    """A write that fails mid-line (disk full) leaves the next successful event readable."""
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer(ev.Notice("before"))
    with monkeypatch.context() as patch:
        patch.setattr("alexnet_tui.metrics.os", FullDisk(half_first=True))
        with pytest.raises(OSError) as raised:
            writer(ev.Notice("cut in half by a full disk"))
        assert raised.value.errno == errno.ENOSPC
    writer(ev.Notice("after space was freed"))
    writer.close()
    assert [r["message"] for r in read_metrics(path)] == ["before", "after space was freed"]


def test_training_goes_on_when_the_metrics_file_cannot_be_written(tmp_path, monkeypatch):
    """A full disk under metrics.jsonl must not kill the run; the other subscribers hear of it once."""
    events: list[ev.Event] = []
    with Trainer(tiny_config(tmp_path), [events.append]) as trainer:
        trainer.prepare()
        writer = MetricsWriter(tmp_path / "run" / "metrics.jsonl")
        trainer.subscribe(writer)
        with monkeypatch.context() as patch:
            patch.setattr("alexnet_tui.metrics.os", FullDisk(half_first=False))
            assert trainer.fit() is RunOutcome.FINISHED
        writer.close()
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "best.pt").is_file()
    warnings = [e for e in events if isinstance(e, ev.Notice) and e.level == "warning"]
    assert len(warnings) == 1
    assert "metrics.jsonl" in warnings[0].message and os.strerror(errno.ENOSPC) in warnings[0].message
    assert isinstance(events[-1], ev.StateChanged) and events[-1].state == "finished"


def test_last_pt_from_more_gpus_restores_on_fewer(monkeypatch):
    """A last.pt saved with 4 GPUs resumed on a machine with 1 must not raise IndexError."""
    model = AlexNet(3, 67, TINY_WIDTH)
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    states = [torch.full((16,), index, dtype=torch.uint8) for index in range(4)]
    payload = {  # what restore_training reads from a last.pt written on a 4-GPU machine
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": None,
        "rng": {"torch": torch.get_rng_state(), "cuda": states},
        "epoch": 2,
        "batch": 3,
        "partial": RunProgress().totals.to_list(),
        "best_val_loss": 0.5,
        "best_epoch": 1,
    }
    restored: list[tuple[torch.Tensor, int]] = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=0: restored.append((state, device)))
    progress = restore_training(payload, model, optimizer, scaler, torch.device("cuda"))
    assert (progress.epoch, progress.batch) == (2, 3)
    assert len(restored) == 1 and torch.equal(restored[0][0], states[0]) and restored[0][1] == 0


def test_resume_into_another_run_s_folder_is_refused_and_a_new_folder_gets_the_best(tmp_path, monkeypatch, capsys):
    """--resume A --out B where B holds another run: refused, B untouched; into a new B: best.pt comes along."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", name]) == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "b").glob("*.pt")}
    capsys.readouterr()
    assert main(["--no-ui", "--resume", "a", "--out", "b", "--epochs", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in (tmp_path / "b").glob("*.pt")} == before
    assert main(["--no-ui", "--resume", "a", "--out", "c", "--epochs", "2"]) == 0
    assert (tmp_path / "c" / "best.pt").exists() and "best checkpoint: c/best.pt" in capsys.readouterr().out


@pytest.mark.asyncio
async def test_a_stop_before_training_began_does_not_stop_the_next_start(tmp_path, pet_folder):
    """x while the TUI checks the images: nothing to save; the next s trains."""
    from alexnet_tui.engine import StoppedBeforeStart
    from alexnet_tui.ui.app import AlexNetApp
    from tests.test_ui import wait_for

    class StopsWhilePreparing(Trainer):
        calls = 0

        def prepare(self):
            StopsWhilePreparing.calls += 1
            if StopsWhilePreparing.calls == 1:
                self.control.request_stop("x pressed")
                raise StoppedBeforeStart("x pressed")
            return super().prepare()

    app = AlexNetApp(tiny_config(tmp_path, epochs=1), trainer_factory=StopsWhilePreparing)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: any("stopped before training began" in n.message for n in app._notifications))
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("q")
