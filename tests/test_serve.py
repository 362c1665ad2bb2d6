"""`alexnet-tui serve` in a real browser: headless Chromium (Debian's package) driven by Playwright."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from alexnet_tui.metrics import read_metrics
from tests.conftest import ROOT, TINY_ARGS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: `apt-get install chromium` (.ci/run installs it)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def events(run, kind: str) -> list[dict]:
    path = run / "metrics.jsonl"
    return [r for r in read_metrics(path) if r["event"] == kind] if path.exists() else []


def wait_until(condition, what: str, timeout: float = 60, page=None) -> None:
    """Poll; with a page, wait through Playwright, whose events are only delivered inside its calls."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(100) if page is not None else time.sleep(0.1)


def test_the_browser_shows_the_live_run_and_its_keys_steer_it(tmp_path):
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = tmp_path / "run"
    command = [sys.executable, "-m", "alexnet_tui"]
    trainer = subprocess.Popen([*command, "--no-ui", *TINY_ARGS, "--epochs", "100000", "--out", str(run)], env=env,
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    port = free_port()
    server = None
    try:
        frames: list[bytes] = []
        with sync_playwright() as playwright:
            # The browser starts while the run does: both take seconds.
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            wait_until(lambda: events(run, "batch"), "training to start")
            server = subprocess.Popen([*command, "serve", str(run), "--port", str(port)], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "the server")
            page.on("websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(
                data if isinstance(data, bytes) else data.encode())))  # fmt: skip
            page.goto(f"http://127.0.0.1:{port}", wait_until="domcontentloaded")
            # What the page draws: the attached screen, its status line and the live batch rows.
            screen = lambda: b"".join(frames)  # noqa: E731
            live = (b"(attached)", b"/100000", b"e-04")  # the status line, batch rows, their lr column
            wait_until(lambda: all(text in screen() for text in live), "the screen", page=page)
            page.locator(".textual-terminal").click()
            page.keyboard.press("p")
            wait_until(lambda: any(r["state"] == "paused" for r in events(run, "state")), "the pause", page=page)
            browser.close()
        acks = events(run, "control")
        assert acks and acks[0]["command"] == "pause" and "@" in acks[0]["sender"]
        assert trainer.poll() is None  # the browser's view is never a second trainer; the run is still here
        assert len(events(run, "run_started")) == 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(30)
        (run / "STOP").touch()
        trainer.wait(60)


def test_serving_beyond_loopback_warns_that_there_is_no_authentication(finished_run, monkeypatch, capsys):
    import textual_serve.server

    from alexnet_tui.cli import main

    started = []

    class Recorded:
        def __init__(self, command, host, port, title):
            started.append((command, host, port))

        def serve(self):
            pass

    monkeypatch.setattr(textual_serve.server, "Server", Recorded)
    assert main(["serve", str(finished_run), "--host", "0.0.0.0", "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert "no authentication" in err and "ssh -L" in err
    command, host, port = started[0]
    assert command.endswith(f"-m alexnet_tui attach {finished_run.resolve()}") and (host, port) == ("0.0.0.0", 8123)
    assert main(["serve", str(finished_run)]) == 0 and started[1][1] == "127.0.0.1"
    assert "no authentication" not in capsys.readouterr().err
