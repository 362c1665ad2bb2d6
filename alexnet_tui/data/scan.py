"""Find the class folders under --data and decode every candidate once to keep only good images."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import stat
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from alexnet_tui.errors import StoppedBeforeStart, UsageError
from alexnet_tui.paths import cache_dir
from alexnet_tui.processes import ignore_stop_signals

SCAN_FORMAT = 1
SCAN_CHUNK = 64  # files a pool process decodes per task
Progress = Callable[[int, int], None]  # (files checked, files to check)


@dataclass
class ScanResult:
    root: Path
    class_names: list[str]
    samples: list[tuple[str, int]]  # (path relative to root, class index)
    skipped: list[str] = field(default_factory=list)
    decoded: int = 0  # files decoded this time; the rest came from the scan cache

    @property
    def fingerprint(self) -> str:
        """Changes whenever the kept files or their labels change."""
        return samples_fingerprint(str(self.root), self.samples)


def samples_fingerprint(prefix: str, samples: list[tuple[str, int]]) -> str:
    """A short hash of a list of (path, label) pairs, keyed by `prefix`."""
    digest = hashlib.sha1(prefix.encode("utf-8", "surrogateescape"))
    for path, label in samples:
        # surrogateescape: a file name that is not UTF-8 (from another system) is its own bytes again
        digest.update(f"{path}\0{label}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def find_class_root(path: Path) -> Path:
    """The folder whose subfolders are the classes: PATH itself, or PATH/PetImages."""
    if not path.exists():
        raise UsageError(f"--data {path}: no such folder; give a folder with one subfolder per class, or --data demo")
    if not path.is_dir():
        raise UsageError(f"--data {path}: not a folder; give a folder with one subfolder per class")
    if (path / "PetImages").is_dir():
        return path / "PetImages"
    return path


def open_image_file(path: str | Path) -> BinaryIO:
    """A picture's file, opened without blocking (a FIFO named x.jpg waited for a writer for ever:
    SIGTERM ignored) and only if it is a regular file; OSError otherwise."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def image_is_readable(path: str) -> bool:
    """Decode the whole image: verify() misses truncated JPEGs, load() does not."""
    try:
        with warnings.catch_warnings(), open_image_file(path) as handle:
            warnings.simplefilter("ignore")
            with Image.open(handle) as image:
                image.load()
                image.convert("RGB")
        return True
    except Exception:  # noqa: BLE001 - any decoder failure means "skip this file", which we count
        return False


def _check_all(paths: list[str], should_stop: Callable[[], bool], on_progress: Progress) -> list[bool] | None:
    """Decode each file; None if a stop request (Ctrl+C, SIGTERM) came first. The verdicts come
    in chunks so that a stop is noticed within one chunk, not after the whole folder."""
    if len(paths) < 256:
        verdicts = []
        for path in paths:
            if should_stop():
                return None
            verdicts.append(image_is_readable(path))
            on_progress(len(verdicts), len(paths))
        return verdicts
    workers = max(1, min(8, os.cpu_count() or 1))
    # forkserver: the caller may be a multithreaded TUI, where fork is unsafe. The pool's processes
    # ignore the stop signals: Ctrl+C reaches the whole process group, and this process owns the stop.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=ignore_stop_signals) as pool:
        chunks = [paths[i : i + SCAN_CHUNK] for i in range(0, len(paths), SCAN_CHUNK)]
        futures = [pool.submit(_check_chunk, chunk) for chunk in chunks]
        verdicts = []
        for future in futures:
            while not should_stop():
                try:
                    verdicts += future.result(timeout=0.2)
                    on_progress(len(verdicts), len(paths))
                    break
                except FutureTimeout:
                    continue
            else:
                pool.shutdown(wait=True, cancel_futures=True)
                return None
        return verdicts


def _check_chunk(paths: list[str]) -> list[bool]:
    return [image_is_readable(path) for path in paths]


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return cache_dir() / "scans" / f"{key}.json"


def _read_cache(path: Path, root: Path) -> dict[str, list]:
    try:
        cached = json.loads(path.read_text())
        if cached.get("format") == SCAN_FORMAT and cached.get("root") == str(root):
            return cached["files"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def _write_cache(path: Path, root: Path, files: dict[str, list]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".tmp{os.getpid()}")
        temp.write_text(json.dumps({"format": SCAN_FORMAT, "root": str(root), "files": files}))
        os.replace(temp, path)
    except OSError:
        pass  # a cache we cannot write only costs the next start a rescan


def scan_folder(
    path: str | Path, should_stop: Callable[[], bool] = lambda: False, on_progress: Progress = lambda done, total: None
) -> ScanResult:
    """List class folders, decode new or changed files, and cache the verdicts by size and mtime.
    Raises StoppedBeforeStart when asked to stop; the verdicts reached so far are not cached."""
    root = find_class_root(Path(path)).resolve()
    class_names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise UsageError(
            f"--data {path}: no class subfolders; put each class's images in a subfolder (e.g. Cat/, Dog/)"
        )
    cache_path = _cache_file(root)
    cached = _read_cache(cache_path, root)
    files: dict[str, list] = {}
    labels: dict[str, int] = {}
    to_check: list[str] = []
    unreadable_folders: list[str] = []

    def unreadable(error: OSError) -> None:  # a subfolder this user may not list: counted, not silent
        unreadable_folders.append(os.path.relpath(str(error.filename), root) + "/")

    for label, name in enumerate(class_names):
        for folder, subfolders, names in os.walk(root / name, onerror=unreadable):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for file_name in sorted(names):
                if file_name.startswith("."):
                    continue
                full = os.path.join(folder, file_name)
                relative = os.path.relpath(full, root)
                try:
                    info = os.stat(full)
                except OSError:
                    continue
                labels[relative] = label
                previous = cached.get(relative)
                if not stat.S_ISREG(info.st_mode):  # a FIFO named x.jpg would block the decoder for ever
                    files[relative] = [info.st_size, info.st_mtime_ns, False]
                elif previous and previous[0] == info.st_size and previous[1] == info.st_mtime_ns:
                    files[relative] = previous
                else:
                    files[relative] = [info.st_size, info.st_mtime_ns, False]
                    to_check.append(relative)
    verdicts = _check_all([str(root / relative) for relative in to_check], should_stop, on_progress)
    if verdicts is None:
        raise StoppedBeforeStart(f"stopped while checking the images in {root}")
    for relative, ok in zip(to_check, verdicts, strict=True):
        files[relative][2] = ok
    if to_check or len(cached) != len(files):
        _write_cache(cache_path, root, files)
    samples = [(relative, labels[relative]) for relative, entry in files.items() if entry[2]]
    skipped = [relative for relative, entry in files.items() if not entry[2]] + unreadable_folders
    counts = [0] * len(class_names)
    for _, label in samples:
        counts[label] += 1
    empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
    if len(class_names) - len(empty) < 2:
        raise UsageError(
            f"--data {path}: need at least two classes with readable images, found "
            f"{len(class_names) - len(empty)} ({', '.join(class_names)})"
        )
    if empty:
        raise UsageError(f"--data {path}: class folder {empty[0]!r} has no readable image; add images or remove it")
    return ScanResult(root, class_names, samples, skipped, decoded=len(to_check))
