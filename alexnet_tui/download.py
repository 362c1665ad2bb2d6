"""`alexnet-tui download`: fetch (retrying, resuming), verify and safely extract Microsoft's Cats vs Dogs zip."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from alexnet_tui.errors import UsageError
from alexnet_tui.paths import cache_dir
from alexnet_tui.transfer import CHUNK, RETRIES, DownloadError, fetch, warn

__all__ = ["DEFAULT_URL", "RETRIES", "DestinationInUse", "DownloadError", "download_dataset", "install_dataset"]

DEFAULT_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
MARKER = ".alexnet-tui-download.json"  # written into DEST after a good extraction: how we know DEST is ours


class DestinationInUse(UsageError):
    """--dest holds something that is not our download: one line, exit code 2, nothing touched."""


def default_dest() -> Path:
    """Where the download goes without --dest: the alexnet-tui cache."""
    return cache_dir() / "cats-vs-dogs"


def check_archive(path: Path, sha256: str | None, remove_bad: bool = True) -> str:
    """Verify the zip (sha256 when given, every member's CRC) and return its sha256; remove it only if it is ours."""
    # remove_bad is False for a zip that was there before this run: it may be the user's, so it stays
    gone = "the file was removed, try again" if remove_bad else "it was left in place: delete it to download again"
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    if sha256 and digest.hexdigest() != sha256.lower():
        _drop(path, remove_bad)
        raise DownloadError(f"{path}: sha256 mismatch (got {digest.hexdigest()}); {gone}")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        _drop(path, remove_bad)
        raise DownloadError(f"{path}: not a valid zip ({error}); {gone}") from None
    if broken is not None:
        _drop(path, remove_bad)
        raise DownloadError(f"{path}: member {broken} fails its CRC check; {gone}")
    return digest.hexdigest()


def _drop(path: Path, remove: bool) -> None:
    """Remove a bad archive when this run made it."""
    if remove:
        path.unlink(missing_ok=True)


def read_marker(dest: Path) -> dict[str, Any]:
    """The marker of an earlier download in dest (url, sha256, size, time); {} when absent or unreadable."""
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def dest_state(dest: Path) -> str:
    """'new' (absent), 'empty' (an empty folder) or 'ours' (an earlier download); DestinationInUse for anything else."""
    try:
        if not dest.exists() and not dest.is_symlink():
            return "new"
        if not dest.is_dir():
            raise DestinationInUse(f"--dest {dest} is not a folder; choose an empty or new folder")
        if (dest / MARKER).is_file() or _unmarked_cache_download(dest):
            return "ours"
        if next(dest.iterdir(), None) is None:
            return "empty"
    except OSError as error:
        raise DestinationInUse(f"--dest {dest}: cannot read it ({error.strerror}); choose another folder") from None
    raise DestinationInUse(
        f"--dest {dest} already holds files that are not a Cats vs Dogs download of alexnet-tui; "
        "choose an empty or new folder"
    )


def _unmarked_cache_download(dest: Path) -> bool:
    """A pre-marker download in our own cache: only alexnet-tui writes there, and an earlier download is only read."""
    return dest.resolve() == default_dest().resolve() and (dest / "PetImages").is_dir()


def _check_escapes(archive: zipfile.ZipFile, path: Path, dest: Path) -> None:
    """Refuse the whole zip if any member would land outside the folder it is extracted into (zip slip)."""
    for name in archive.namelist():
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
            raise DownloadError(f"{path}: refused, member {name!r} would be written outside {dest}")


def safe_extract(path: Path, dest: Path, marker: Mapping[str, Any]) -> None:
    """Extract into a new sibling folder of ours, add the marker, then move it into place; remove nothing else."""
    with zipfile.ZipFile(path) as archive:
        _check_escapes(archive, path, dest)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{dest.name}.extracting-", dir=dest.parent))
        except OSError as error:
            raise DownloadError(f"cannot extract into {dest.parent} ({error.strerror})") from None
        try:
            archive.extractall(staging)
            (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            _place(staging, dest)
        except OSError as error:
            raise DownloadError(f"cannot extract into {dest} ({error.strerror})") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # mkdtemp made it for us; gone or empty after a good move


def _place(staging: Path, dest: Path) -> None:
    """Rename the staged tree to dest when dest is new; move its entries in when dest is an empty folder."""
    state = dest_state(dest)  # again: the download may have taken an hour, and someone may have used the folder
    if state == "ours":
        return  # another run finished first: its copy stays, ours is dropped with the staging folder
    if state == "new":
        staging.rename(dest)
        return
    # an empty folder the user made stays (its permissions, a mount point, a shell's working directory)
    moved: list[Path] = []
    try:
        for entry in sorted(staging.iterdir(), key=lambda entry: entry.name == MARKER):  # the marker last
            target = dest / entry.name
            if target.exists() or target.is_symlink():
                raise FileExistsError(errno.EEXIST, "something appeared in the folder meanwhile", str(target))
            moved.append(target)
            shutil.move(entry, target)
    except OSError:
        for target in moved:  # only what we moved in: the user's folder goes back to empty
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        raise


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


def install_dataset(
    url: str,
    dest: Path,
    report: Callable[[int, int | None], None],
    sha256: str | None = None,
    retries: int = RETRIES,
    notify: Callable[[str], None] = warn,
) -> bool:
    """Fetch (or go on fetching) the zip beside dest, verify it, extract it into dest; False if dest was done before.

    The one sequence behind `alexnet-tui download` and the TUI's download offer. dest must be new, an empty folder
    or an earlier download of ours (it holds MARKER); anything else is refused before a byte is fetched. An earlier
    download is left exactly as it is, user's additions included: delete the folder to download again.
    """
    if dest_state(dest) == "ours":
        done = read_marker(dest).get("sha256")
        if sha256 and done and done != sha256.lower():
            raise DestinationInUse(
                f"--dest {dest} holds a download whose sha256 is {done}, not {sha256}; delete it or choose another"
            )
        return False
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"--dest {dest}: cannot create it ({error.strerror})") from None
    archive = dest.parent / (dest.name + ".zip")
    fetched = not archive.exists()
    if fetched:
        fetch(url, archive, report, retries, notify)
    digest = check_archive(archive, sha256, remove_bad=fetched)
    marker = {
        "url": url,
        "sha256": digest,
        "size": archive.stat().st_size,
        "extracted": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    safe_extract(archive, dest, marker)
    return True


def download_dataset(url: str, dest: Path | None, sha256: str | None, retries: int) -> int:
    """`alexnet-tui download`: install the data set, then say what is in it and how to train on it."""
    dest = (dest or default_dest()).expanduser().resolve()
    report = progress_reporter(sys.stdout.isatty())
    try:
        fresh = install_dataset(url, dest, report, sha256, retries)
    finally:
        report.close()
    if not fresh:
        print(f"Cats vs Dogs already downloaded in {dest}; left as it is (delete that folder to download it again)")
    from alexnet_tui.data.scan import scan_folder

    result = scan_folder(dest)
    print(
        f"Cats vs Dogs ready in {dest}: {len(result.samples)} readable images in {len(result.class_names)} classes, "
        f"{len(result.skipped)} unreadable files skipped (left on disk)"
    )
    print(f"train on it with: alexnet-tui --data {dest}")
    return 0
