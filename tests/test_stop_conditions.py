"""Stops as users cause them: Ctrl+C to the whole process group, a dropped SSH connection, SIGTERM.

Each test runs the real command in a session of its own (setsid, or a pseudo-terminal) with loader
workers on a folder of JPEGs, because that is where the stop signals reach more than one process.
"""

import os
import pty
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_tui.cli import main
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.metrics import read_metrics
from tests.conftest import ROOT, TINY_ARGS

FOLDER_ARGS = [*TINY_ARGS, "--workers", "1", "--batch-size", "4"]  # later options win


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}


def events(run: Path, kind: str) -> list[dict]:
    path = run / "metrics.jsonl"
    return [r for r in read_metrics(path) if r["event"] == kind] if path.exists() else []


def wait_until(condition, timeout: float = 120, what: str = "the condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_process_group_stops_gracefully_with_loader_workers(tmp_path, pet_folder, capsys, sig, code):
    """Ctrl+C in a terminal (or scancel, systemctl stop) signals the loader workers too."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tui", "--no-ui", *FOLDER_ARGS, "--data", str(pet_folder)]
        + ["--epochs", "500", "--out", str(run)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        start_new_session=True,  # its own process group, as a shell's foreground job
    )
    wait_until(lambda: len(events(run, "batch")) >= 2, what="training to start")
    os.killpg(process.pid, sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "exited unexpectedly" not in err and "Traceback" not in err
    assert "resume with: alexnet-tui --no-ui --resume" in out
    stopped = events(run, "stopped")
    assert len(stopped) == 1 and stopped[0]["reason"] == f"{signal.Signals(sig).name} received"
    saved = load_checkpoint(run / "last.pt")
    assert (saved["epoch"], saved["batch"]) == (stopped[0]["epoch"], stopped[0]["batch"])
    if sig == signal.SIGINT:  # the resume line means what it says
        assert main(["--no-ui", "--resume", str(run), "--epochs", str(stopped[0]["epoch"])]) == 0
        resumed = capsys.readouterr().out
        assert f"resuming at epoch {stopped[0]['epoch']:02d}, batch {stopped[0]['batch']}" in resumed


def test_ctrl_c_during_the_scan_stops_cleanly_and_is_not_forgotten(tmp_path):
    """A folder large enough for the parallel scan; Ctrl+C reaches the scan's pool processes too."""
    rng = np.random.default_rng(0)
    for name in ("Cat", "Dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
    noise = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    for index in range(300):  # enough for the parallel scan, whose processes take seconds to start
        Image.fromarray(np.roll(noise, index, axis=1)).save(
            tmp_path / "pets" / ("Cat", "Dog")[index % 2] / f"{index}.jpg"
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tui", "--no-ui", *FOLDER_ARGS, "--data", "pets", "--out", "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        start_new_session=True,
    )
    assert process.stdout.readline().startswith("preparing data")
    time.sleep(0.3)  # the scan's pool is still starting: its processes import torch
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "stopped before training began" in err and "Traceback" not in err and "BrokenProcessPool" not in err
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing trained, nothing pretended


def spawn_in_pty(argv: list[str], cwd: Path, rows: int = 30, columns: int = 100) -> tuple[int, int, list[bytes]]:
    """The command on a pseudo-terminal, as in an SSH session; its screen is drained in a thread."""
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty's slave is its controlling terminal
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.chdir(cwd)
        os.execvpe(sys.executable, [sys.executable, "-m", "alexnet_tui", *argv], env())
    screen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.append(data)

    threading.Thread(target=drain, daemon=True).start()
    return pid, master, screen


def exit_status(pid: int, timeout: float = 180) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the process did not end")


def test_a_dropped_ssh_connection_leaves_a_headless_run_going_to_the_end(tmp_path, pet_folder):
    """`alexnet-tui --no-ui` in a terminal without nohup; the terminal goes away (EIO on every write)."""
    run = tmp_path / "run"
    pid, master, _ = spawn_in_pty(
        ["--no-ui", *FOLDER_ARGS, "--data", str(pet_folder), "--epochs", "2", "--out", str(run)], tmp_path
    )
    wait_until(lambda: len(events(run, "batch")) >= 1, what="training to start")
    os.close(master)  # the SSH connection drops: SIGHUP to the session, EIO for its writes
    assert exit_status(pid) == 0
    assert len(events(run, "epoch")) == 2 and events(run, "finished")
    log = (run / "train.log").read_text()
    assert "epoch 02, loss:" in log and "test loss:" in log
    assert (run / "last.pt").exists() and (run / "best.pt").exists()


def test_a_dropped_ssh_connection_under_the_tui_goes_on_headless(tmp_path, pet_folder):
    """The TUI without tmux; the connection drops mid-run: the run finishes in the same process."""
    run = tmp_path / "run"
    pid, master, screen = spawn_in_pty(
        [*FOLDER_ARGS, "--data", str(pet_folder), "--epochs", "2", "--out", str(run)], tmp_path
    )
    wait_until(lambda: b"Start" in b"".join(screen), what="the screen")
    os.write(master, b"s")
    wait_until(lambda: len(events(run, "batch")) >= 1, what="training to start")
    os.close(master)
    assert exit_status(pid) == 0
    assert len(events(run, "epoch")) == 2 and events(run, "finished")
    log = (run / "train.log").read_text()
    assert "the terminal hung up" in log and "test loss:" in log


def test_sigterm_to_the_tui_stops_gracefully(tmp_path):
    """systemctl stop, scancel or kill -- -PGID on a TUI run: last.pt is written and the exit is 143."""
    run = tmp_path / "run"
    # Demo data: the group signal with loader workers is the headless test's; this one is the TUI's handler.
    pid, master, screen = spawn_in_pty([*TINY_ARGS, "--epochs", "100000", "--out", str(run)], tmp_path)
    wait_until(lambda: b"Start" in b"".join(screen), what="the screen")
    os.write(master, b"s")
    wait_until(lambda: len(events(run, "batch")) >= 2, what="training to start")
    os.killpg(pid, signal.SIGTERM)
    assert exit_status(pid) == 143
    stopped = events(run, "stopped")
    assert len(stopped) == 1 and stopped[0]["reason"] == "SIGTERM received"
    assert (run / "last.pt").exists()
    os.close(master)
