"""The TUI process and its terminal: fd 2 kept off the screen, and what a hangup leaves behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from alexnet_tui.safe_files import open_appending

_saved_stderr: int | None = None


def redirect_stderr(path: Path) -> None:
    """C libraries (libjpeg, CUDA) and loader workers write to fd 2 directly, under Textual's
    Python-level capture: send fd 2 to a file so they cannot scribble over the screen.
    Textual draws on sys.__stderr__, so that first moves to a duplicate of the terminal's fd."""
    global _saved_stderr
    path.parent.mkdir(parents=True, exist_ok=True)
    target = open_appending(path)
    if _saved_stderr is None:
        _saved_stderr = os.dup(2)
        terminal = os.fdopen(os.dup(2), "w", encoding=sys.__stderr__.encoding or "utf-8", errors="replace")
        sys.__stderr__ = sys.stderr = terminal
    os.dup2(target, 2)
    os.close(target)


def restore_stderr() -> None:
    global _saved_stderr
    if _saved_stderr is not None:
        sys.stderr.flush()
        os.dup2(_saved_stderr, 2)
        os.close(_saved_stderr)
        _saved_stderr = None


def detach_from_terminal() -> None:
    """The terminal hung up (SSH dropped): every descriptor that led to it now leads to /dev/null,
    so the screen's last writes and whatever else prints go nowhere instead of failing with EIO."""
    null = os.open(os.devnull, os.O_RDWR)
    descriptors = {0, 1}
    if _saved_stderr is not None:
        descriptors.add(_saved_stderr)
        descriptors.add(sys.__stderr__.fileno())  # the duplicate Textual draws on
    else:
        descriptors.add(2)
    for descriptor in descriptors:
        try:
            os.dup2(null, descriptor)
        except OSError:
            continue  # already closed: nothing can reach the terminal through it
    os.close(null)
