import io
import threading
import zipfile
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
    """Serves one payload on 127.0.0.1 with Range support; can cut the first response short."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None, ranges: bool = True, status: int = 200):
        self.payload, self.cut_first_at, self.ranges, self.status = payload, cut_first_at, ranges, status
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                if server.status != 200:
                    self.send_error(server.status)
                    return
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_at is not None and len(server.requests) == 1:
                    self.wfile.write(body[: server.cut_first_at])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/kagglecatsanddogs_5340.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

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


def test_interrupted_download_resumes_with_range_then_trains(tmp_path, serve, capsys):
    payload = make_zip(tmp_path)
    server = serve(payload, cut_first_at=len(payload) // 3)
    dest = tmp_path / "cvd"
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 1
    assert "run the command again to resume" in capsys.readouterr().err
    assert not dest.exists()
    assert main(["download", "--url", server.url, "--dest", str(dest)]) == 0
    assert server.requests[-1] == f"bytes={len(payload) // 3}-"
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
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_file_url_and_sha256(tmp_path):
    import hashlib

    payload = make_zip(tmp_path)
    source = tmp_path / "copy.zip"
    source.write_bytes(payload)
    dest = tmp_path / "cvd"
    assert main(["download", "--url", source.as_uri(), "--dest", str(dest), "--sha256", "0" * 64]) == 1
    good = hashlib.sha256(payload).hexdigest()
    assert main(["download", "--url", source.as_uri(), "--dest", str(dest), "--sha256", good]) == 0


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
        assert app.config.data == "demo"
