"""Fault injection: kill -9 at random moments, a full disk, files that break after the scan."""

import errno
import os
import random
import signal
import subprocess
import sys
import time

import torch

from alexnet_tui.engine import RunOutcome, Trainer
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.metrics import read_metrics
from tests.conftest import ROOT, TINY_ARGS, tiny_config


def test_kill_9_at_random_moments_leaves_loadable_files_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = tmp_path / "run"
    rng = random.Random(1234)
    command = [sys.executable, "-m", "alexnet_tui", "--no-ui", *TINY_ARGS, "--epochs", "40", "--out", str(run)]

    def starts() -> int:
        if not (run / "metrics.jsonl").exists():
            return 0
        return len([r for r in read_metrics(run / "metrics.jsonl") if r["event"] == "run_started"])

    for attempt in range(3):
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 120
        while not ((run / "last.pt").exists() and starts() == attempt + 1) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 1.5))  # in training, evaluating or writing a checkpoint (epochs of ~0.2 s)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        for name in ("best.pt", "last.pt"):
            assert load_checkpoint(run / name)["architecture"]
        records = read_metrics(run / "metrics.jsonl")
        assert records and all("event" in record for record in records)
        command = [sys.executable, "-m", "alexnet_tui", "--no-ui", "--resume", str(run), "--epochs", "40"]
    resumed = [r for r in read_metrics(run / "metrics.jsonl") if r["event"] == "run_started"]
    assert len(resumed) == 3
    assert [r["start_epoch"] for r in resumed] == sorted(r["start_epoch"] for r in resumed)


SLOW_SAVES = """
import sys, threading, torch
real_save = torch.save
def slow_save(payload, file, *args, **kwargs):  # written, then a slow disk: the temp file lies there a while
    real_save(payload, file, *args, **kwargs)
    if threading.current_thread().name == "checkpoint-writer":
        threading.Event().wait(1.0)
torch.save = slow_save
from alexnet_tui.cli import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_background_save_keeps_the_files_before_it(tmp_path):
    """The background write overlaps the next epoch: a kill -9 in the middle of it (here the disk is
    slowed down) leaves the previous best.pt and last.pt whole, and --resume goes on."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = tmp_path / "slow_saves.py"
    script.write_text(SLOW_SAVES)
    run = tmp_path / "run"
    command = [sys.executable, str(script), "--no-ui", *TINY_ARGS, "--epochs", "4", "--out", str(run)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while not ((run / "last.pt").exists() and list(run.glob(".*.pt.*.tmp"))) and time.time() < deadline:
        time.sleep(0.02)  # the second save (or a later one) is being written: files from the one before exist
    assert list(run.glob(".*.pt.*.tmp")), "no save in progress was seen"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    before = load_checkpoint(run / "last.pt")
    assert load_checkpoint(run / "best.pt")["architecture"] and before["epoch"] >= 2
    resumed = subprocess.run(
        [sys.executable, "-m", "alexnet_tui", "--no-ui", "--resume", str(run), "--epochs", "4"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 5 and not list(run.glob(".*.pt.*.tmp"))


def test_full_disk_while_saving_keeps_state_in_memory(tmp_path, monkeypatch):
    events: list[ev.Event] = []
    trainer = Trainer(tiny_config(tmp_path, epochs=2), [events.append])
    real_save = torch.save

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    assert trainer.fit() is RunOutcome.FAILED
    failure = [e for e in events if isinstance(e, ev.Failed)][0].message
    assert "No space left on device" in failure and "kept in memory" in failure
    assert not (tmp_path / "run" / "best.pt").exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert trainer.fit() is RunOutcome.FINISHED  # the disk was fixed: save and go on
    assert load_checkpoint(tmp_path / "run" / "best.pt")["best_epoch"] >= 1
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")] == [".lock"]  # no temp files


def test_image_broken_after_the_scan_is_skipped_and_counted(tmp_path, pet_folder):
    events: list[ev.Event] = []
    trainer = Trainer(tiny_config(tmp_path, data=str(pet_folder), epochs=1, batch_size=4, cache="off"), [events.append])
    trainer.prepare()
    relative, _ = trainer.data.train.samples[0]
    (trainer.data.root / relative).write_bytes(b"")
    assert trainer.fit() is RunOutcome.FINISHED
    notices = [e.message for e in events if isinstance(e, ev.Notice)]
    assert any("1 image(s) became unreadable after the scan" in message for message in notices)


def test_a_last_pt_with_flipped_bytes_is_named_damaged_not_resumed(tmp_path, capsys, monkeypatch):
    """400 bytes flipped inside last.pt (a disk, a copy) resumed without a word: torch.load checks no CRC."""
    from alexnet_tui.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", "run"]) == 0
    capsys.readouterr()
    data = bytearray((tmp_path / "run" / "last.pt").read_bytes())
    middle = len(data) // 2  # inside the tensors' bytes: the pickle and the zip's index are at the ends
    data[middle : middle + 400] = bytes(byte ^ 0x5A for byte in data[middle : middle + 400])
    (tmp_path / "run" / "last.pt").write_bytes(bytes(data))
    assert main(["--no-ui", "--resume", "run", "--epochs", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "run/last.pt: damaged (its weights' CRC-32 does not match" in error
    assert load_checkpoint(tmp_path / "run" / "best.pt")["architecture"]  # the other file is whole and checked
