"""`alexnet-tui download`: fetch (retrying, resuming), verify and safely extract Microsoft's Cats vs Dogs zip."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from alexnet_tui.errors import UsageError
from alexnet_tui.paths import cache_dir

DEFAULT_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
CHUNK = 1 << 20
MARKER = ".alexnet-tui-download.json"  # written into DEST after a good extraction: how we know DEST is ours
RETRIES = 20  # wget's default; a cut connection costs a retry, not a rerun
BACKOFF_S = 1.0  # first wait before a retry, doubling each time (tests set it to 0)
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 30.0  # per connect and per read: a stalled connection counts as a lost one
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})  # the statuses curl --retry tries again


class DownloadError(UsageError):
    """Network or archive trouble: one line, exit code 1."""

    exit_code = 1


class DestinationInUse(UsageError):
    """--dest holds something that is not our download: one line, exit code 2, nothing touched."""


class _Interrupted(Exception):
    """A transfer that may go through on another try: a cut or stalled connection, a busy server."""

    def __init__(self, what: str, reason: object) -> None:
        super().__init__(f"{what} ({reason})")
        self.what, self.reason = what, reason


class _StartOver(Exception):
    """The `.part` file is not a prefix of the server's current file: fetch again from byte zero."""


def default_dest() -> Path:
    """Where the download goes without --dest: the alexnet-tui cache."""
    return cache_dir() / "cats-vs-dogs"


def warn(line: str) -> None:
    """Default for retry notes: one line on stderr (a live rich bar prints it above itself)."""
    print(line, file=sys.stderr, flush=True)


def _reason(error: BaseException) -> str:
    """A short why for a network error: the socket's own words, not urllib's wrapper."""
    error = getattr(error, "reason", None) or error
    if isinstance(error, BaseException):
        return getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(error)


def _transient(error: BaseException) -> bool:
    """True for a timeout or a reset (worth retrying even before the server ever answered); False for refused, DNS."""
    cause = getattr(error, "reason", error)
    return isinstance(cause, TimeoutError | ConnectionResetError | ConnectionAbortedError | http.client.HTTPException)


def _amount(done: int, total: int | None) -> str:
    """'N of M bytes' for the retry and error lines (just 'N bytes' when the size is unknown)."""
    return f"{done:,} of {total:,} bytes" if total is not None else f"{done:,} bytes"


class _Transfer:
    """One download into a `.part` file; a `.part.json` beside it keeps the validator for later tries and runs."""

    def __init__(self, url: str, part: Path, report: Callable[[int, int | None], None]) -> None:
        self.url, self.part, self.report = url, part, report
        self.sidecar = part.with_name(part.name + ".json")
        self.reached = False  # once the server answered, a failed connect is network trouble rather than a bad address
        self.total: int | None = None

    def have(self) -> int:
        """Bytes already in the part file."""
        return self.part.stat().st_size if self.part.exists() else 0

    def remembered(self) -> dict[str, Any]:
        """What the sidecar says about the file the part came from; {} for a part from an older alexnet-tui."""
        try:
            known = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return {}  # resume unguarded, as before: the zip's CRCs (and --sha256) still catch a splice
        if not isinstance(known, dict) or known.get("url") != self.url:
            raise _StartOver  # the part came from another address
        return known

    def remember(self, headers: Mapping[str, str], total: int | None) -> None:
        """Write the sidecar atomically, so a half-written one never vouches for the part."""
        known = {"url": self.url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
        scratch = self.sidecar.with_name(self.sidecar.name + ".tmp")
        scratch.write_text(json.dumps({**known, "size": total}) + "\n")
        scratch.replace(self.sidecar)

    def forget(self) -> None:
        """Drop the part and its sidecar: both are ours, and they no longer match the server's file."""
        self.part.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)

    def finish(self, target: Path) -> None:
        """The part is whole: it becomes the target, and its sidecar has done its job."""
        self.part.replace(target)
        self.sidecar.unlink(missing_ok=True)

    def attempt(self) -> None:
        """One request: returns once the part is whole; raises _Interrupted (retry) or _StartOver (from zero)."""
        have = self.have()
        known = self.remembered() if have else {}
        self.total = known.get("size", self.total)
        response = self.open(have, known)
        if response is None:
            return
        with response:
            if have and response.status == 206:
                self.total = self.check_range(response.headers, have, known)
                self.stream(response, have, fresh=False)
            elif response.status == 206:
                raise _Interrupted("unexpected reply", "206 to a request for the whole file")
            else:  # 200 to a Range request: the server ignores Range, or If-Range says the file changed
                length = response.headers.get("Content-Length")
                self.total = int(length) if length is not None else None
                self.stream(response, 0, fresh=True)

    def open(self, have: int, known: Mapping[str, Any]) -> Any:
        """Send the request (Range and If-Range when resuming); None when the part turns out to be whole already."""
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            etag = known.get("etag") or ""
            # If-Range takes only a strong validator; a weak ETag would get the whole file every time
            validator = etag if etag and not etag.startswith("W/") else known.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=TIMEOUT_S)
        except urllib.error.HTTPError as error:
            self.reached = True
            if error.code == 416 and have:  # nothing left past our bytes: whole, unless the file's size moved
                if known.get("size") in (None, have):
                    return None
                raise _StartOver from None
            if error.code in TRANSIENT_HTTP:
                raise _Interrupted(f"HTTP {error.code}", error.reason) from None
            raise DownloadError(f"download {self.url}: HTTP {error.code} {error.reason}") from None
        except ValueError as error:  # urllib's word for an address it cannot parse
            raise DownloadError(f"download {self.url}: {error}; give an http, https or file:// address") from None
        except (OSError, http.client.HTTPException) as error:
            if self.reached or _transient(error):
                raise _Interrupted("cannot reach it", _reason(error)) from None
            raise DownloadError(
                f"download {self.url}: cannot reach it ({_reason(error)}); check the address or use --url"
            ) from None
        self.reached = True
        return response

    def check_range(self, headers: Mapping[str, str], have: int, known: Mapping[str, Any]) -> int | None:
        """The total size from a 206's Content-Range; _StartOver unless it continues exactly our bytes of our file."""
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (headers.get("Content-Range") or "").strip())
        if match is None or int(match[1]) != have:
            raise _StartOver
        length = headers.get("Content-Length")
        total = int(match[2]) if match[2] != "*" else (have + int(length) if length is not None else None)
        # a server that ignores If-Range still shows a changed file by its ETag or its size
        etag, size = headers.get("ETag"), known.get("size")
        if (known.get("etag") and etag and etag != known["etag"]) or (size is not None and size != total):
            raise _StartOver
        return total

    def stream(self, response: Any, have: int, fresh: bool) -> None:
        """Copy the body into the part; a failed read is _Interrupted, a failed write a DownloadError."""
        done = have
        try:
            with open(self.part, "wb" if fresh else "ab") as file:
                if fresh:  # after the truncation: the old bytes never sit beside the new file's validator
                    self.remember(response.headers, self.total)
                while chunk := self.read(response):
                    file.write(chunk)
                    done += len(chunk)
                    self.report(done, self.total)
        except OSError as error:
            raise DownloadError(
                f"download: cannot write {self.part} ({error.strerror}); free space or use --dest"
            ) from None
        if self.total is not None and done < self.total:
            # http.client returns b"" at an early end rather than raising: the length check sees the cut
            raise _Interrupted("connection lost", "the server closed it early")

    @staticmethod
    def read(response: Any) -> bytes:
        """The next chunk of the body; any failure here is the network's, never the disk's."""
        try:
            # read1: what has arrived, up to CHUNK; read(CHUNK) would wait for a full chunk and lose it on a timeout
            return response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as error:  # timeouts, resets, TLS trouble, a short chunked body
            raise _Interrupted("connection lost", _reason(error)) from None


def fetch(
    url: str,
    target: Path,
    report: Callable[[int, int | None], None],
    retries: int = RETRIES,
    notify: Callable[[str], None] = warn,
    backoff_s: float | None = None,
) -> Path:
    """Download url to target through a `.part` file, resuming with Range and If-Range, retrying with backoff."""
    transfer = _Transfer(url, target.with_name(target.name + ".part"), report)
    first_wait = BACKOFF_S if backoff_s is None else backoff_s
    tries = 0
    while True:
        try:
            transfer.attempt()
            break
        except _StartOver:
            transfer.forget()  # not a network failure: no retry is spent, the next request asks for byte zero on
        except _Interrupted as cut:
            got = _amount(transfer.have(), transfer.total)
            if tries >= retries:  # the part and its sidecar stay: the next run resumes where this one stopped
                raise DownloadError(
                    f"download {url}: network error, {cut.what} after {got} ({cut.reason}); "
                    "run the command again to resume"
                ) from None
            tries += 1
            wait = min(first_wait * 2 ** (tries - 1), MAX_BACKOFF_S)
            notify(
                f"download {url}: {cut.what} after {got} ({cut.reason}); "
                f"retrying in {wait:g} s (retry {tries} of {retries})"
            )
            time.sleep(wait)
    transfer.finish(target)
    return target


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
