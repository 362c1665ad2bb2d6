"""DDP under torchrun: two gloo processes on this CPU, one set of logs, one checkpoint for everyone."""

import os
import subprocess
import sys

import torch

from alexnet_tui.cli import main
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.engine.control import Control
from alexnet_tui.engine.distributed import Ranks
from alexnet_tui.engine.steering import Steering
from alexnet_tui.engine.training_state import RunProgress
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


class OneRankOfTwo(Steering):
    """The batch-boundary logic of rank 1 of 2, with the agreement between ranks scripted."""

    def __init__(self) -> None:
        self.ranks, self.control, self.run_dir, self.device = Ranks(1, 1, 2), Control(), None, torch.device("cpu")
        self._agreed_stop, self._last_poll, self.progress = False, 0.0, RunProgress(batch=8)  # a sync batch
        self.agreements, self.stopped_at_agreement = 0, None

    def _state(self, state) -> None:
        pass

    def _stop(self, epoch: int) -> None:
        self.stopped_at_agreement = self.agreements


def test_a_signal_after_the_ranks_agreed_waits_for_the_next_agreement(monkeypatch):
    """SIGINT lands on this rank just after the ranks agreed to pause: stopping at once would leave the
    other rank waiting in the next agreement while this one saves. It stops at the next agreement,
    which the other rank joins with the same answer."""
    rank = OneRankOfTwo()

    def agree(stop, pause, evaluate, ranks, device):
        rank.agreements += 1
        if rank.agreements == 1:
            rank.control.request_stop("SIGINT received")  # the signal, right after the collective
            return False, True, False  # what both ranks had asked: pause
        return stop, True, False  # the other rank sees this one's stop in this agreement

    monkeypatch.setattr("alexnet_tui.engine.steering.agree", agree)
    evaluate_now, must_pause = rank._requests_at_boundary()
    assert (evaluate_now, must_pause) == (False, True)
    assert rank._at_boundary(epoch=1, evaluate_now=False) is False
    assert rank.stopped_at_agreement == 2
