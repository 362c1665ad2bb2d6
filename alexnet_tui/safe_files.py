"""Files of a run folder that other users may write to (a group-writable project folder, NFS):
never through a link someone planted, temp files under names nobody can guess or create first."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def open_appending(path: Path) -> int:
    """A log opened for appending; a link where it should be raises OSError (ELOOP), never followed."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_FOLLOW, 0o644)


def unguessable_temp(path: Path) -> Path:
    """A temp name beside `path` nobody can guess. Create it exclusively (O_EXCL, or open mode "x"):
    that fails on anything already there, a planted link included, so nothing is written through one."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def exclusive_temp(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path`, created exclusively under an unpredictable name."""
    temp = unguessable_temp(path)
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o644), temp


def replace_text(path: Path, text: str) -> None:
    """`path` holds `text`, written to an exclusive temp file and renamed over it: a link at `path`
    is replaced by the file, its target left alone."""
    descriptor, temp = exclusive_temp(path)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
