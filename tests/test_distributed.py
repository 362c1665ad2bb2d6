"""DDP under torchrun: two gloo processes on this CPU, one set of logs, one checkpoint for everyone."""

import os
import subprocess
import sys

from alexnet_tui.cli import main
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.metrics import read_metrics
from tests.conftest import ROOT, TINY_ARGS

TWO_RANKS = [*TINY_ARGS, "--demo-size", "96"]  # the last --demo-size wins: 78 training images


def test_two_gloo_processes_train_as_one_and_resume_on_one(tmp_path, monkeypatch, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALEXNET_TUI_DIST_TIMEOUT_S": "120"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "alexnet_tui",
        "--no-ui",
        *TWO_RANKS,
        "--epochs",
        "2",
        "--lr",
        "3e-3",  # far enough from the initial weights that a rank evaluating those would show
        "--device",
        "cpu",
        "--out",
        "run",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("epoch 02, loss:") == 1 and out.count("evaluation loss:") == 1  # rank 0 alone prints
    assert "weights identical on all 2 ranks" in out
    assert "unreadable" not in out
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["event"] for r in records].count("run_started") == 1
    batches = [r for r in records if r["event"] == "batch"]
    assert len(batches) == 10  # 78 training images over 2 ranks in batches of 8, 2 epochs
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    monkeypatch.chdir(tmp_path)
    # Each rank reported its share of the test images with best.pt's weights, sent by rank 0 (a rank
    # with another model, e.g. its initial one, moves the loss): the same as one process evaluating it.
    final = next(r for r in records if r["event"] == "evaluation" and r["split"] == "test")
    assert main(["evaluate", "--checkpoint", "run", "--split", "test"]) == 0
    alone = capsys.readouterr().out.splitlines()[0]
    assert alone.startswith(f"evaluation loss: {final['loss']:.5f}, evaluation accuracy: {final['acc']:.5f}")
    assert final["loss"] < 1.0  # trained away from chance (ln 3 = 1.0986), so the comparison means something
    assert main(["--no-ui", "--resume", "run", "--epochs", "3"]) == 0  # the DDP checkpoint, in one process
    out = capsys.readouterr().out
    assert "resuming at epoch 03, batch 0" in out and "epoch 03, loss:" in out
