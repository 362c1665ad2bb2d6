"""Where alexnet-tui keeps caches: $XDG_CACHE_HOME/alexnet-tui (or ~/.cache/alexnet-tui)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet-tui"
