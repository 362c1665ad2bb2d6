"""DDP under torchrun: two gloo processes on this CPU, one set of logs, one checkpoint for everyone."""

import os
import subprocess
import sys

import pytest
import torch

from alexnet_tui.cli import main
from alexnet_tui.engine.boundary import Boundary, Decision
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.engine.control import Control, Wants
from alexnet_tui.engine.distributed import Ranks
from alexnet_tui.metrics import read_metrics
from tests.conftest import ROOT, TINY_ARGS

TWO_RANKS = [*TINY_ARGS, "--demo-size", "96"]  # the last --demo-size wins: 78 training images


# Each rank in a folder of its own, as on machines that do not share a disk: `--out run` is then
# node-local, and rank 1 cannot see what rank 0 writes.
NODE_LOCAL = """import os, sys
os.makedirs(f"rank{os.environ['RANK']}", exist_ok=True)
os.chdir(f"rank{os.environ['RANK']}")
from alexnet_tui.cli import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


def test_two_gloo_processes_train_as_one_and_resume_on_one(tmp_path, monkeypatch, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALEXNET_TUI_DIST_TIMEOUT_S": "120"}
    (tmp_path / "node_local.py").write_text(NODE_LOCAL)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "node_local.py",
        "--no-ui",
        *TWO_RANKS,
        "--epochs",
        "3",
        "--lr",
        "3e-3",  # best at epoch 2 (checked below): the last weights are not the best
        "--amp",
        "off",  # as `evaluate`, whatever this CPU's bf16
        "--device",
        "cpu",
        "--out",
        "run",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("epoch 03, loss:") == 1 and out.count("test loss:") == 1  # rank 0 alone prints
    assert "weights identical on all 2 ranks" in out
    assert "unreadable" not in out
    run = tmp_path / "rank0" / "run"
    assert not (tmp_path / "rank1" / "run").exists()  # rank 0 alone writes
    records = read_metrics(run / "metrics.jsonl")
    assert [r["event"] for r in records].count("run_started") == 1
    batches = [r for r in records if r["event"] == "batch"]
    assert len(batches) == 15  # 78 training images over 2 ranks in batches of 8, 3 epochs
    checkpoint = load_checkpoint(run / "last.pt")
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert checkpoint["best_epoch"] == 2  # so a rank reporting its last weights would move the figures
    monkeypatch.chdir(tmp_path)
    # Each rank reported its share of the test images with best.pt's weights, which rank 0 read and sent
    # (rank 1 cannot see the file): the same figures as one process evaluating best.pt.
    final = next(r for r in records if r["event"] == "evaluation" and r["split"] == "test")
    assert main(["evaluate", "--checkpoint", str(run), "--split", "test"]) == 0
    alone = capsys.readouterr().out.splitlines()[0]
    assert alone.startswith(f"test loss: {final['loss']:.5f}, test accuracy: {final['acc']:.5f}")
    assert main(["--no-ui", "--resume", str(run), "--epochs", "4"]) == 0  # the DDP checkpoint, in one process
    out = capsys.readouterr().out
    assert "resuming at epoch 04, batch 0" in out and "epoch 04, loss:" in out


@pytest.mark.parametrize("rank", [0, 1])
def test_a_signal_after_the_ranks_agreed_to_pause_waits_for_the_next_agreement(monkeypatch, rank):
    """SIGINT lands on one rank just after the ranks agreed to pause (rank 1 has mirrored the pause).
    A stop also lifts a pause: that rank must neither train on alone nor stop alone, either way leaving
    the other rank waiting in a collective. It stops at the next agreement, which the other rank joins
    with the same answer."""
    control = Control()
    if rank == 0:
        control.pause()  # the user's pause, which rank 0 holds
    asked: list[Wants] = []

    def agree(wants, ranks, device):
        asked.append(wants)
        if len(asked) == 1:
            return Wants.PAUSE  # what the ranks asked: pause
        return (wants & Wants.STOP) | Wants.PAUSE  # the other rank learns this one's stop in this agreement

    monkeypatch.setattr("alexnet_tui.engine.boundary.agree", agree)
    boundary = Boundary(control, Ranks(rank, rank, 2), torch.device("cpu"), None, lambda event: None)
    assert boundary.decide(batch=8) is Decision.PAUSE  # a batch the ranks agree at
    assert control.paused  # rank 1 mirrors rank 0's pause, to wait on it
    control.request_stop("SIGINT received")  # the signal, right after the agreement
    assert boundary.decide(batch=9) is Decision.GO and len(asked) == 1  # no agreement between: nothing alone
    assert boundary.decide() is Decision.STOP and len(asked) == 2  # paused: every rank agrees each time round
