import hashlib
import io
import json
import socket
import struct
import threading
import time
import zipfile
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alexnet_tui.cli import main
from tests.conftest import make_pet_images


def make_zip(tmp_path: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like kagglecatsanddogs_5340.zip, pathologies included."""
    source = tmp_path / "zip-source"
    make_pet_images(source)
    (source / "CDLA-Permissive-2.0.pdf").write_bytes(b"%PDF licence")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


class Server:
    """Serves a zip on 127.0.0.1 with ETag, Range and If-Range; can cut responses short or change the file."""

    def __init__(
        self,
        payload: bytes,
        cuts: Sequence[int] = (),
        ranges: bool = True,
        status: int = 200,
        later: bytes | None = None,
        if_range: bool = True,
        cut_how: str = "close",
    ):
        """cuts[i]: response i stops after that many body bytes (Content-Length promised all), then the server
        closes the connection, resets it or stalls (cut_how); later: the file from the second request on;
        ranges=False ignores Range; if_range=False ignores If-Range (a sloppy server)."""
        self.payload, self.cuts, self.ranges, self.status = payload, list(cuts), ranges, status
        self.later, self.if_range, self.cut_how = later, if_range, cut_how
        self.requests: list[dict[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index = len(server.requests)
                wanted, validator = self.headers.get("Range"), self.headers.get("If-Range")
                server.requests.append({"range": wanted, "if_range": validator})
                if server.status != 200:
                    self.send_error(server.status)
                    return
                payload = server.later if server.later is not None and index > 0 else server.payload
                etag = server.etag(payload)
                start = 0
                # RFC 9110: a Range with a stale If-Range gets the whole new file with 200
                if server.ranges and wanted and (validator in (None, etag) or not server.if_range):
                    start = int(wanted.split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                else:
                    self.send_response(200)
                body = payload[start:]
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if index < len(server.cuts):
                    self.wfile.write(body[: server.cuts[index]])
                    self.wfile.flush()
                    if server.cut_how == "stall":
                        time.sleep(1.0)  # longer than the client's read timeout in the tests
                    elif server.cut_how == "reset":  # linger 0: close sends RST, the client reads ECONNRESET
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/kagglecatsanddogs_5340.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def etag(payload: bytes) -> str:
        return '"' + hashlib.sha256(payload).hexdigest()[:16] + '"'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(*args, **kwargs) -> Server:
        servers.append(Server(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """Retries without the real 1 s, 2 s, 4 s... waits."""
    from alexnet_tui import transfer

    monkeypatch.setattr(transfer, "BACKOFF_S", 0.0)


def leftovers(folder: Path) -> list[str]:
    """Staging folders and partial files a finished run should not leave behind."""
    return sorted(p.name for p in folder.iterdir() if "extracting" in p.name or p.name.endswith((".part", ".json")))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under folder with its mtime and (for files) its bytes: proof that nothing was touched."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def test_interrupted_download_resumes_with_range_then_trains(tmp_path, serve, capsys):
    payload = make_zip(tmp_path)
    cut = len(payload) // 3
    server = serve(payload, cuts=[cut])
    dest = tmp_path / "cvd"
    assert main(["download", "--url", server.url, "--dest", str(dest), "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "network error" in err and "run the command again to resume" in err and "free space" not in err
    assert not dest.exists()
    assert (tmp_path / "cvd.zip.part").stat().st_size == cut
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    # the second run resumes, and its If-Range comes from the first run's response, kept in cvd.zip.part.json
    assert server.requests[-1] == {"range": f"bytes={cut}-", "if_range": Server.etag(payload)}
    out = capsys.readouterr().out
    assert "15 readable images in 2 classes, 6 unreadable files skipped" in out
    assert (dest / "PetImages" / "Cat" / "666.jpg").exists()  # reported, not deleted
    code = main(
        [
            "--no-ui",
            "--data",
            str(dest),
            "--image-size",
            "67",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0
    assert "6 skipped" in capsys.readouterr().out


def test_server_without_range_starts_over(tmp_path, serve):
    payload = make_zip(tmp_path)
    dest = tmp_path / "cvd"
    (tmp_path / "cvd.zip.part").write_bytes(payload[:100])
    server = serve(payload, ranges=False)
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    assert (dest / "PetImages" / "Dog").is_dir()


@pytest.mark.parametrize(
    ("kind", "message"),
    [("404", "HTTP 404"), ("refused", "cannot reach it"), ("corrupt", "not a valid zip"), ("slip", "outside")],
)
def test_download_errors_are_one_line(tmp_path, serve, capsys, kind, message):
    dest = tmp_path / "cvd"
    if kind == "404":
        url = serve(b"", status=404).url
    elif kind == "refused":
        server = serve(b"")
        url = server.url
        server.close()
    elif kind == "corrupt":
        url = serve(b"PK\x03\x04 this is not really a zip" * 10).url
    else:
        url = serve(make_zip(tmp_path, {"../../evil.txt": b"pwned"})).url
    assert main(["download", "--url", url, "--dest", str(dest)]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not dest.exists() and not [name for name in leftovers(tmp_path) if "extracting" in name]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("name", ["copy.zip", "cvd.zip"])  # cvd.zip: the user's file sits where our zip would go
def test_file_url_and_sha256_never_delete_the_users_file(tmp_path, capsys, name):
    payload = make_zip(tmp_path)
    source = tmp_path / name
    source.write_bytes(payload)
    dest = tmp_path / "cvd"
    assert main(["download", "--url", source.as_uri(), "--dest", str(dest), "--sha256", "0" * 64]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and len(err.strip().splitlines()) == 1
    assert source.read_bytes() == payload  # a file:// source is copied, and only our own copy is removed
    assert ("removed" in err) == (name == "copy.zip") and ("left in place" in err) == (name == "cvd.zip")
    good = hashlib.sha256(payload).hexdigest()
    assert main(["download", "--url", source.as_uri(), "--dest", str(dest), "--sha256", good]) == 0
    assert source.read_bytes() == payload


def test_cut_downloads_retry_by_themselves_with_range(tmp_path, serve, capsys):
    payload = make_zip(tmp_path)
    first, second = len(payload) // 4, len(payload) // 3
    server = serve(payload, cuts=[first, second])
    dest = tmp_path / "cvd"
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    assert [r["range"] for r in server.requests] == [None, f"bytes={first}-", f"bytes={first + second}-"]
    assert [r["if_range"] for r in server.requests[1:]] == [Server.etag(payload)] * 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "free space" not in " ".join(err)
    assert f"connection lost after {first:,} of {len(payload):,} bytes" in err[0]
    assert err[0].endswith("retrying in 0 s (retry 1 of 20)") and err[1].endswith("(retry 2 of 20)")
    assert (dest / "PetImages" / "Cat" / "0.jpg").is_file()
    marker = json.loads((dest / ".alexnet-tui-download.json").read_text())
    assert marker["sha256"] == hashlib.sha256(payload).hexdigest() and marker["url"] == server.url
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("honours_if_range", [True, False])
def test_file_changed_between_tries_starts_over_not_spliced(tmp_path, serve, honours_if_range):
    old = make_zip(tmp_path / "v1", {"version.txt": b"old"})
    new = make_zip(tmp_path / "v2", {"version.txt": b"new"})
    server = serve(old, cuts=[len(old) // 2], later=new, if_range=honours_if_range)
    dest = tmp_path / "cvd"
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    assert server.requests[1] == {"range": f"bytes={len(old) // 2}-", "if_range": Server.etag(old)}
    if not honours_if_range:  # it sent 206 of the new file: the ETag gave it away, and we asked again from zero
        assert server.requests[2] == {"range": None, "if_range": None}
    assert (dest / "version.txt").read_bytes() == b"new"
    marker = json.loads((dest / ".alexnet-tui-download.json").read_text())
    assert marker["sha256"] == hashlib.sha256(new).hexdigest()


@pytest.mark.parametrize("how", ["close", "reset", "stall"])
def test_always_cut_gives_up_with_one_line_and_keeps_the_part(tmp_path, serve, capsys, monkeypatch, how):
    from alexnet_tui import transfer

    monkeypatch.setattr(transfer, "TIMEOUT_S", 0.3)
    payload = make_zip(tmp_path)
    server = serve(payload, cuts=[1000, 1000, 1000], cut_how=how)
    dest = tmp_path / "cvd"
    assert main(["download", "--url", server.url, "--dest", str(dest), "--retries", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(server.requests) == 3 and len(err) == 3
    assert all("connection lost after" in line and "retrying in" in line for line in err[:2])
    assert err[2].startswith("alexnet-tui: error: download ") and "network error" in err[2]
    assert err[2].endswith("run the command again to resume") and "free space" not in " ".join(err)
    assert not dest.exists() and (tmp_path / "cvd.zip.part.json").is_file()
    have = (tmp_path / "cvd.zip.part").stat().st_size  # a reset may drop bytes still in flight; close and stall not
    assert f"after {have:,} of {len(payload):,} bytes" in err[2] and (have == 3000 or how == "reset")
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0  # the next run goes on from there
    assert server.requests[3] == {
        "range": f"bytes={have}-" if have else None,
        "if_range": Server.etag(payload) if have else None,
    }
    assert (dest / "PetImages" / "Cat").is_dir()
    assert main(["download", "--retries", "-1"]) == 2


@pytest.mark.parametrize("how", ["path", "dot"])
def test_dest_holding_user_files_is_refused_and_untouched(tmp_path, serve, capsys, monkeypatch, how):
    server = serve(make_zip(tmp_path))
    dest = tmp_path / "mine"
    (dest / "sub").mkdir(parents=True)
    (dest / "notes.txt").write_text("keep me")
    (dest / "sub" / "photo.jpg").write_bytes(b"mine too")
    before = snapshot(dest)
    if how == "dot":
        monkeypatch.chdir(dest)
    assert main(["download", "--url", server.url, "--dest", str(dest) if how == "path" else "."]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(dest.resolve()) in err[0] and "choose an empty or new folder" in err[0]
    assert snapshot(dest) == before and (dest / "notes.txt").read_text() == "keep me"
    assert server.requests == [] and not (tmp_path / "mine.zip").exists()  # refused before fetching a byte


def test_rerun_into_our_earlier_download_leaves_it_alone(tmp_path, serve, capsys):
    payload = make_zip(tmp_path)
    server = serve(payload)
    dest = tmp_path / "cvd"
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    marker = json.loads((dest / ".alexnet-tui-download.json").read_text())
    assert marker["url"] == server.url and marker["size"] == len(payload)
    assert marker["sha256"] == hashlib.sha256(payload).hexdigest() and marker["extracted"]
    (dest / "my-notes.txt").write_text("added after the download")
    before = snapshot(dest)
    capsys.readouterr()
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "already downloaded" in out and "15 readable images" in out
    assert snapshot(dest) == before and len(server.requests) == 1
    assert main(["download", "--url", server.url, "--dest", str(dest), "--sha256", "0" * 64]) == 2
    assert "holds a download whose sha256 is" in capsys.readouterr().err and snapshot(dest) == before


@pytest.mark.parametrize("how", ["path", "dot"])
def test_existing_empty_dest_folder_is_filled_in_place(tmp_path, serve, capsys, monkeypatch, how):
    server = serve(make_zip(tmp_path))
    dest = tmp_path / "empty"
    dest.mkdir()
    inode = dest.stat().st_ino
    if how == "dot":
        monkeypatch.chdir(dest)
    assert main(["download", "--url", server.url, "--dest", str(dest) if how == "path" else "."]) == 0
    assert "15 readable images in 2 classes" in capsys.readouterr().out
    assert dest.stat().st_ino == inode  # the user's folder itself, filled: not removed and made again
    assert (dest / "PetImages" / "Dog").is_dir() and (dest / ".alexnet-tui-download.json").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.asyncio
async def test_tui_offers_to_download_or_use_the_demo_set(tmp_path, serve, monkeypatch):
    from alexnet_tui import download
    from alexnet_tui.config import TrainConfig
    from alexnet_tui.ui.app import AlexNetApp
    from tests.fake_trainer import ScriptedTrainer
    from tests.test_ui import wait_for

    monkeypatch.setattr(download, "DEFAULT_URL", serve(make_zip(tmp_path)).url)
    app = AlexNetApp(TrainConfig(), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DownloadOffer")
        await pilot.press("d")
        await wait_for(pilot, lambda: app.state == "finished", timeout=60)
        assert (download.default_dest() / "PetImages" / "Cat").is_dir()
    (download.default_dest()).rename(tmp_path / "moved")
    app = AlexNetApp(TrainConfig(), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DownloadOffer")
        await pilot.press("m")
        await wait_for(pilot, lambda: app.state == "finished", timeout=60)
        assert app.config.data == "demo" and app.config.image_size == 96  # the demo's own size, in the form too
