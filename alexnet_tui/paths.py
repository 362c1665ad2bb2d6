"""Where alexnet-tui keeps caches: $XDG_CACHE_HOME/alexnet-tui (or ~/.cache/alexnet-tui)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet-tui"


def printable(text: str) -> str:
    """Text with a replacement character where a file name that is not UTF-8 left surrogates, which
    no terminal, log or screen encoding takes (a UnicodeEncodeError read as a terminal gone)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
