"""HTTP downloads that survive real networks: into a `.part` file, resumed with Range and checked
with If-Range (a file that changed on the server starts over), retried with backoff on a cut,
reset or stalled connection or a busy server. `alexnet-tui download` (the Cats vs Dogs zip) and
--pretrained (the ImageNet weights) both fetch through here."""

from __future__ import annotations

import http.client
import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from alexnet_tui.errors import UsageError

CHUNK = 1 << 20
RETRIES = 20  # wget's default; a cut connection costs a retry, not a rerun
BACKOFF_S = 1.0  # first wait before a retry, doubling each time (tests set it to 0)
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 30.0  # per connect and per read: a stalled connection counts as a lost one
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})  # the statuses curl --retry tries again


class DownloadError(UsageError):
    """Network or archive trouble: one line, exit code 1."""

    exit_code = 1


class _Interrupted(Exception):
    """A transfer that may go through on another try: a cut or stalled connection, a busy server."""

    def __init__(self, what: str, reason: object) -> None:
        super().__init__(f"{what} ({reason})")
        self.what, self.reason = what, reason


class _StartOver(Exception):
    """The `.part` file is not a prefix of the server's current file: fetch again from byte zero."""


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
                f"download {self.url}: cannot reach it ({_reason(error)}); check the address and the connection"
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
