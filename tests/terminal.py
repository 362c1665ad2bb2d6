"""Run the real program in a pseudo-terminal and read its screen back through a terminal emulator.

What a person sees is what these tests check: the program's own process (not a pilot), a pty of a
given size (0x0 included), keys written at the moments a person presses them, and the screen as
pyte draws it from the bytes the program wrote. The terminal can answer queries like a real one
(DA, cursor position, DECRQM, CSI 14/16/18 t), answer them late (a slow SSH link), or never answer.

    with Terminal(["--data", "demo", ...], cwd=tmp_path) as term:
        term.wait_for("IDLE")
        term.press("s")
        term.wait_for(lambda text: "TRAINING" in text)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pyte

Answers = Literal["now", "late", "never"]
CELL_PIXELS = (10, 20)  # width, height of a cell in pixels, as a common terminal font has
ESCAPE_PAUSE = 0.3  # seconds after a lone escape

# Keys as a terminal sends them (what Textual's driver parses); anything else is written as typed.
KEYS = {
    "enter": b"\r",
    "tab": b"\t",
    "shift+tab": b"\x1b[Z",
    "escape": b"\x1b",
    "backspace": b"\x7f",
    "up": b"\x1b[A",
    "down": b"\x1b[B",
    "right": b"\x1b[C",
    "left": b"\x1b[D",
    "ctrl+c": b"\x03",
}


class AnsweringScreen(pyte.Screen):
    """A pyte screen that answers the program's queries like a terminal does, now, late, or never."""

    def __init__(self, columns: int, lines: int, send: Callable[[bytes], None], answers: Answers, delay: float):
        super().__init__(columns, lines)
        self.send, self.answers, self.delay = send, answers, delay
        self.queries: list[str] = []  # every query seen, answered or not

    def write_process_input(self, data: str) -> None:
        self.queries.append(data)
        if self.answers == "never":
            return
        if self.answers == "late":  # the answer comes after the asker stopped waiting, as over a slow link
            threading.Timer(self.delay, self.send, [data.encode()]).start()
        else:
            self.send(data.encode())

    def window_manipulation(self, *params: int, private: bool = False) -> None:
        """XTWINOPS: 14 text area in pixels, 16 cell size in pixels, 18 text area in cells."""
        if private or not params:
            return
        width, height = CELL_PIXELS
        answers = {
            14: f"\x1b[4;{self.lines * height};{self.columns * width}t",
            16: f"\x1b[6;{height};{width}t",
            18: f"\x1b[8;{self.lines};{self.columns}t",
        }
        if params[0] in answers:
            self.write_process_input(answers[params[0]])

    def mode_request(self, mode: int) -> None:
        """DECRQM (CSI ? Ps $ p, which Textual sends at start): this terminal knows none of those modes."""
        self.write_process_input(f"\x1b[?{mode};0$y")


DECRQM = re.compile(rb"\x1b\[\?(\d+)\$p")  # pyte skips these, so they are answered before it sees them


class AnsweringStream(pyte.ByteStream):
    csi = {**pyte.ByteStream.csi, "t": "window_manipulation"}  # pyte leaves XTWINOPS to debug()


def program_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a person's terminal gives: TERM set, no COLUMNS/LINES (the pty's size rules),
    no inherited Textual or terminal-program hints from whoever runs the tests."""
    env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    env.update(TERM="xterm-256color", COLORTERM="truecolor", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env.update(extra or {})
    return env


_NOT_INHERITED = {
    "COLUMNS", "LINES", "TEXTUAL", "TEXTUAL_DRIVER", "TERM_PROGRAM", "KITTY_WINDOW_ID", "TMUX", "STY",
    "NO_COLOR", "TEXTUAL_SCREENSHOT", "PYTEST_CURRENT_TEST", "ALEXNET_TUI_PICTURES",
}  # fmt: skip


class Terminal:
    """`python -m alexnet_tui ARGS` in a pty of `size` (columns, lines), read into a pyte screen."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        size: tuple[int, int] = (80, 24),
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        answers: Answers = "now",
        answer_delay: float = 0.3,
        pixels: tuple[int, int] | None = None,
        screen_size: tuple[int, int] | None = None,
    ) -> None:
        """`pixels`: the window's size in pixels as TIOCGWINSZ reports it (None: 0x0, as many
        terminals leave it). `screen_size`: the emulated screen, when the pty's size is one no
        screen has (0x0: the program falls back to 80x24)."""
        columns, lines = size
        shown = screen_size or (size if columns and lines else (80, 24))
        self.master, slave = os.openpty()
        self.resize(columns, lines, pixels)
        self.lock = threading.Lock()
        self.raw = bytearray()
        self.screen = AnsweringScreen(shown[0], shown[1], self._send, answers, answer_delay)
        self.stream = AnsweringStream(self.screen)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "alexnet_tui", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=program_env(env),
            start_new_session=True,  # a session and process group of its own, as a terminal's shell gives
            preexec_fn=_take_controlling_terminal,
            close_fds=True,
        )
        os.close(slave)
        self.reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self.reader.start()

    # ---- the terminal side ----------------------------------------------------------------------
    def resize(self, columns: int, lines: int, pixels: tuple[int, int] | None = None) -> None:
        """Set the window size (the program gets SIGWINCH once it runs)."""
        width, height = pixels or (0, 0)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, width, height))

    def resize_window(self, columns: int, lines: int) -> None:
        """What a person dragging the window's corner does: the pty's size changes (SIGWINCH) and
        the emulated screen with it, blank until the program draws it again."""
        with self.lock:
            self.screen.resize(lines, columns)
            self.screen.erase_in_display(2)
        self.resize(columns, lines)

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the program is gone: nobody to answer
            os.write(self.master, data)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the slave side closed it
                return
            if not chunk:
                return
            with self.lock:
                self.raw += chunk
                for request in DECRQM.finditer(chunk):
                    self.screen.mode_request(int(request.group(1)))
                self.stream.feed(chunk)

    # ---- what a person does ------------------------------------------------------------------------
    def press(self, keys: str | bytes, *, pause: float = 0.05) -> None:
        """Write keys to the program. bytes go as they are; a str is a key name from KEYS
        ("enter", "tab", ...) or, failing that, text typed one character at a time."""
        if isinstance(keys, bytes):
            self._send(keys)
            return
        for data in [KEYS[keys]] if keys in KEYS else [c.encode() for c in keys]:
            self._send(data)
            # Keys a person presses come apart; a lone escape needs longer, or Textual reads it and
            # the next key as one alt+key.
            time.sleep(max(pause, ESCAPE_PAUSE) if data == b"\x1b" else pause)

    def type(self, text: str) -> None:
        """Type text into whatever has focus (no key names)."""
        for character in text:
            self.press(character.encode())
            time.sleep(0.01)

    # ---- what a person sees -------------------------------------------------------------------------
    def screen_text(self) -> str:
        """The screen as it is now, its lines joined with newlines (trailing spaces dropped)."""
        with self.lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def line_with(self, text: str) -> str | None:
        """The first screen line holding `text`, if any."""
        return next((line for line in self.screen_text().splitlines() if text in line), None)

    def output(self) -> str:
        """Everything the program wrote so far, escape sequences included, decoded."""
        with self.lock:
            return self.raw.decode("utf-8", "replace")

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = 20.0, interval: float = 0.05) -> str:
        """Poll the screen until `what` (text on screen, or a predicate of the screen text) holds;
        return the screen text. On timeout, fail with the screen as it is."""
        deadline = time.monotonic() + timeout
        holds = (lambda text: what in text) if isinstance(what, str) else what
        while True:
            text = self.screen_text()
            if holds(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"not on screen after {timeout} s: {what!r}\n--- screen ---\n{text}")
            if self.process.poll() is not None and not self.reader.is_alive():
                raise AssertionError(
                    f"the program exited ({self.process.returncode}) before {what!r} showed\n"
                    f"--- screen ---\n{text}\n--- output ---\n{self.output()[-3000:]}"
                )
            time.sleep(interval)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """The exit status once the program ends by itself (after q, say)."""
        code = self.process.wait(timeout)
        self.reader.join(5)
        return code

    def close(self, grace: float = 5.0) -> int:
        """End the program's process group: SIGTERM, then SIGKILL after `grace` seconds. Returns the
        exit status (negative: killed by that signal)."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(grace)
        _signal_group(self.process.pid, signal.SIGKILL)  # helpers left in the group (loader workers)
        self.reader.join(2)
        with contextlib.suppress(OSError):
            os.close(self.master)
        return self.process.returncode

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_controlling_terminal() -> None:
    """In the child, after setsid: the pty becomes its controlling terminal (SIGWINCH, /dev/tty)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _signal_group(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)
