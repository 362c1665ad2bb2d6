"""`alexnet-tui download`: fetch, resume, verify and safely extract Microsoft's Cats vs Dogs zip."""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from alexnet_tui.errors import UsageError
from alexnet_tui.paths import cache_dir

DEFAULT_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
CHUNK = 1 << 20


class DownloadError(UsageError):
    """Network or archive trouble: one line, exit code 1."""

    exit_code = 1


def default_dest() -> Path:
    return cache_dir() / "cats-vs-dogs"


def fetch(url: str, target: Path, report: Callable[[int, int | None], None]) -> Path:
    """Download url to target, continuing a partial `.part` file with an HTTP Range request."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to fetch: the part file is whole
            part.replace(target)
            return target
        raise DownloadError(f"download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"download {url}: cannot reach it ({reason}); check the address or use --url") from None
    with response:
        status = getattr(response, "status", 200)
        resumed = have > 0 and status == 206
        if not resumed:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        try:
            with open(part, "ab" if resumed else "wb") as file:
                done = have
                while chunk := response.read(CHUNK):
                    file.write(chunk)
                    done += len(chunk)
                    report(done, total)
        except OSError as error:
            raise DownloadError(f"download: cannot write {part} ({error.strerror}); free space or use --dest") from None
    if total is not None and part.stat().st_size != total:
        raise DownloadError(
            f"download {url}: got {part.stat().st_size} of {total} bytes; run the command again to resume"
        )
    part.replace(target)
    return target


def check_archive(path: Path, sha256: str | None) -> None:
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            while block := file.read(CHUNK):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            path.unlink()
            raise DownloadError(f"{path}: sha256 mismatch (got {digest.hexdigest()}); the file was removed, try again")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        path.unlink()
        raise DownloadError(f"{path}: not a valid zip ({error}); the file was removed, try again") from None
    if broken is not None:
        path.unlink()
        raise DownloadError(f"{path}: member {broken} fails its CRC check; the file was removed, try again")


def safe_extract(path: Path, dest: Path) -> None:
    """Refuse members that would land outside dest; extract to a temp folder, then move it into place."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
                raise DownloadError(f"{path}: refused, member {name!r} would be written outside {dest}")
        staging = dest.with_name(dest.name + ".extracting")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            archive.extractall(staging)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise DownloadError(f"cannot extract into {dest.parent} ({error.strerror})") from None
    if dest.exists():
        shutil.rmtree(dest)
    staging.replace(dest)


def progress_reporter(live: bool):
    last = [0.0]
    start = time.monotonic()
    if live:
        from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(
            *Progress.get_default_columns()[:2],
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        task = bar.add_task("download", total=None)
        bar.start()

        def report(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        report.close = bar.stop  # type: ignore[attr-defined]
        return report

    def plain(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 5 or (total and done == total):
            last[0] = now
            rate = done / max(now - start, 1e-9) / 1e6
            of = f" of {total / 1e6:.1f} MB" if total else ""
            print(f"downloaded {done / 1e6:.1f} MB{of} ({rate:.1f} MB/s)", flush=True)

    plain.close = lambda: None  # type: ignore[attr-defined]
    return plain


def install_dataset(url: str, dest: Path, report: Callable[[int, int | None], None], sha256: str | None = None) -> None:
    """Fetch (or go on fetching) the zip beside dest, verify it, and extract it into dest.
    The one sequence behind `alexnet-tui download` and the TUI's download offer."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"--dest {dest}: cannot create it ({error.strerror})") from None
    archive = dest.parent / (dest.name + ".zip")
    if not archive.exists():
        fetch(url, archive, report)
    check_archive(archive, sha256)
    safe_extract(archive, dest)


def download_command(argv: Sequence[str]) -> int:
    from alexnet_tui.cli import Parser

    parser = Parser(prog="alexnet-tui download", description="Fetch and unpack Microsoft's Cats vs Dogs zip.")
    parser.add_argument("--url", default=DEFAULT_URL, help="where to fetch from (http, https or file://)")
    parser.add_argument("--dest", type=Path, default=None, help="folder to unpack into (default: the cache)")
    parser.add_argument("--sha256", help="expected checksum of the zip")
    args = parser.parse_args(argv)
    dest = (args.dest or default_dest()).expanduser().resolve()
    report = progress_reporter(sys.stdout.isatty())
    try:
        install_dataset(args.url, dest, report, args.sha256)
    finally:
        report.close()
    from alexnet_tui.data.scan import scan_folder

    result = scan_folder(dest)
    print(
        f"Cats vs Dogs ready in {dest}: {len(result.samples)} readable images in {len(result.class_names)} classes, "
        f"{len(result.skipped)} unreadable files skipped (left on disk)"
    )
    print(f"train on it with: alexnet-tui --data {dest}")
    return 0
