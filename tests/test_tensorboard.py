"""With the tensorboard extra installed, a run's TensorBoard files say what metrics.jsonl says."""

import pytest

from alexnet_tui.cli import main
from alexnet_tui.metrics import read_metrics
from tests.conftest import TINY_ARGS

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="the tensorboard extra is not installed"
)


def test_tensorboard_scalars_equal_metrics_jsonl(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "2", "--out", "run"]) == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    board = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    board.Reload()
    batches = [r for r in records if r["event"] == "batch"]
    losses = board.Scalars("batch/loss")
    assert [s.step for s in losses] == [(r["epoch"] - 1) * r["batches"] + r["batch"] for r in batches]
    assert [s.value for s in losses] == pytest.approx([r["loss"] for r in batches], rel=1e-6)
    assert [s.value for s in board.Scalars("batch/running_acc")] == pytest.approx([r["running_acc"] for r in batches])
    epochs = [r for r in records if r["event"] == "epoch"]
    for tag in ("train_loss", "val_loss", "val_acc", "images_per_sec"):
        assert [s.value for s in board.Scalars(f"epoch/{tag}")] == pytest.approx([r[tag] for r in epochs], rel=1e-6)
    assert "config/text_summary" in board.Tags()["tensors"]


def test_a_full_disk_under_the_tensorboard_files_is_one_line(tmp_path, monkeypatch, capfd):
    """The writer's thread printed "Exception in thread" and ~100 lines, and close() set the exit code."""
    import errno
    import os

    from tensorboard.summary.writer import record_writer

    real_write = record_writer.RecordWriter.write
    writes = []

    def full_after_a_few(self, data):
        writes.append(len(data))
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", full_after_a_few)
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "2", "--out", "run"]) == 0  # the run itself is fine
    captured = capfd.readouterr()
    said = captured.out + captured.err
    assert "Traceback" not in said and "Exception in thread" not in said, said[-3000:]
    lines = [line for line in said.splitlines() if "tensorboard" in line.lower()]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "metrics.jsonl has every figure" in lines[0]
    assert (tmp_path / "run" / "last.pt").is_file()
