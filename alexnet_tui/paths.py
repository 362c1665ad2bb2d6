"""Where alexnet-tui keeps caches ($XDG_CACHE_HOME/alexnet-tui, or ~/.cache/alexnet-tui), and how
text is made fit for a terminal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet-tui"


def printable(text: str) -> str:
    """Text with a replacement character where a file name that is not UTF-8 left surrogates, which
    no terminal, log or screen encoding takes (a UnicodeEncodeError read as a terminal gone)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def fresh_line(stream: TextIO) -> str:
    """What starts a line of `stream` afresh on a terminal (a key echoed before a screen took it, a
    "loading ..." line to write over); nothing in a file or a pipe."""
    return "\r\x1b[K" if stream.isatty() else ""
