"""`alexnet-tui serve` in a real browser: headless Chromium (Debian's package) driven by Playwright."""

import os
import re
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
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
            url = served_url(server)
            wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "the server")
            page.on("websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(
                data if isinstance(data, bytes) else data.encode())))  # fmt: skip
            page.goto(url, wait_until="domcontentloaded")
            # What the page draws: the attached screen, its status line and the live batch rows.
            screen = lambda: b"".join(frames)  # noqa: E731
            live = (b"(attached)", b"/100000", b"e-04")  # the status line, batch rows, their lr column
            wait_until(lambda: all(text in screen() for text in live), "the screen", page=page)
            page.locator(".textual-terminal").click()
            page.keyboard.press("p")
            wait_until(lambda: any(r["state"] == "paused" for r in events(run, "state")), "the pause", page=page)
            browser.close()
        acks = events(run, "control")
        assert acks and acks[0]["command"] == "pause" and f"via serve on 127.0.0.1:{port}" in acks[0]["sender"]
        assert trainer.poll() is None  # the browser's view is never a second trainer; the run is still here
        assert len(events(run, "run_started")) == 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(30)
        (run / "STOP").touch()
        trainer.wait(60)


def served_url(server: subprocess.Popen) -> str:
    """The URL serve prints, its token included: what a user copies into the browser."""
    line = server.stdout.readline()
    found = re.search(r"http://\S+\?token=\S+", line)
    assert found, line
    return found.group(0)


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
    assert "has the URL's token" in err and "ssh -L" in err
    command, host, port = started[0]
    assert command.startswith("ALEXNET_TUI_VIA='serve on 0.0.0.0:8123' ")
    assert command.endswith(f"-m alexnet_tui attach {finished_run.resolve()}") and (host, port) == ("0.0.0.0", 8123)
    assert main(["serve", str(finished_run)]) == 0 and started[1][1] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err


def test_the_page_and_its_websocket_need_the_token_and_the_pages_own_origin(finished_run, tmp_path):
    """Another user's client, or any web page in the laptop's browser while ssh -L is up, got
    101 Switching Protocols and steered the run."""
    import asyncio

    import aiohttp

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tui", "serve", str(finished_run), "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        url = served_url(server)
        token = url.split("token=")[1]
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "the server")

        async def probe() -> dict[str, object]:
            seen: dict[str, object] = {}
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as plain:
                seen["no token"] = (await plain.get(base + "/")).status
                seen["wrong token"] = (await plain.get(base + "/?token=" + "x" * len(token))).status
                seen["static"] = (await plain.get(base + "/static/js/textual.js")).status
                for origin in ("http://evil.example.com", base):
                    try:
                        await plain.ws_connect(base + "/ws", headers={"Origin": origin})
                        seen[f"ws without token from {origin}"] = 101
                    except aiohttp.WSServerHandshakeError as error:
                        seen[f"ws without token from {origin}"] = error.status
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                page = await browser.get(f"http://localhost:{port}/?token={token}")  # the address the user typed
                seen["page"], seen["page text"] = page.status, await page.text()
                typed = f"http://localhost:{port}"  # the cookie is the page's, for the host the user typed
                try:
                    await browser.ws_connect(typed + "/ws", headers={"Origin": "http://evil.example.com"})
                    seen["ws from another origin"] = 101
                except aiohttp.WSServerHandshakeError as error:
                    seen["ws from another origin"] = error.status
                socket_ = await browser.ws_connect(typed + "/ws", headers={"Origin": typed})
                seen["ws from the page"] = 101
                await socket_.close()
            return seen

        seen = asyncio.run(probe())
        assert seen["no token"] == seen["wrong token"] == 403
        assert seen["static"] == 200  # the page's scripts hold nothing of the run
        assert [status for key, status in seen.items() if key.startswith("ws without token")] == [403, 403]
        assert seen["ws from another origin"] == 403
        assert seen["ws from the page"] == 101 and seen["page"] == 200
        assert f"ws://localhost:{port}/ws" in seen["page text"]  # the browser's own address, not 0.0.0.0
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


def test_a_busy_port_and_a_port_out_of_range_are_one_line(finished_run, capsys):
    from alexnet_tui.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(finished_run), "--port", str(port)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "cannot listen there" in error
    assert main(["serve", str(finished_run), "--port", "99999"]) == 2
    assert "from 1 to 65535" in capsys.readouterr().err
