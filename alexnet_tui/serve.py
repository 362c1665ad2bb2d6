"""`alexnet-tui serve`: the attached screen in a browser, one `attach` process per tab (textual-serve).

Anyone who can reach the port could otherwise steer the run: another user of the machine, or any
web page open in the laptop's browser while `ssh -L` forwards it. So, as Jupyter does, the printed
URL carries a secret; it becomes an HttpOnly, SameSite=Strict cookie, and every request but the
page's static files must bring it. A WebSocket must also come from the page's own origin (the check
a browser cannot be made to skip)."""

from __future__ import annotations

import hmac
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from alexnet_tui.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "alexnet_tui_token"
VIA_ENV = "ALEXNET_TUI_VIA"  # set for the attach process of a browser tab: RemoteControl says it
OPEN_PATHS = ("/static/",)  # textual-serve's scripts and fonts: nothing of the run


def guarded_server(command: str, host: str, port: int, title: str, token: str) -> Any:
    """textual-serve's Server with the secret and Origin checked on every request, and the page's
    URLs built from the address the browser used (0.0.0.0 is not an address a browser can load)."""
    from textual_serve.server import Server

    class GuardedServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(self.check_token)
            return app

        @web.middleware
        async def check_token(self, request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.startswith(OPEN_PATHS):
                return await handler(request)
            given = request.query.get("token") or request.cookies.get(COOKIE, "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=403, text="alexnet-tui serve: open the URL serve printed (with its token)\n")
            if request.path == "/ws" and not same_origin(request):
                return web.Response(status=403, text="alexnet-tui serve: a WebSocket from another origin\n")
            response = await handler(request)
            if request.query.get("token"):
                response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return response

        async def on_startup(self, app: web.Application) -> None:
            """Quiet: textual-serve's banner names the URL without its token, which is refused."""

        async def handle_index(self, request: web.Request) -> Any:
            self.public_url = f"{request.scheme}://{request.host}"  # read at once, with no await between
            return await super().handle_index(request)

    return GuardedServer(command, host=host, port=port, title=title)


def same_origin(request: web.Request) -> bool:
    """The browser's Origin is this server as the browser reached it; a client with no Origin
    (not a browser) has shown the token, which is what a browser on another site cannot."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def check_port(host: str, port: int) -> None:
    """One line for a port that cannot be served, before textual-serve prints its logo and a traceback."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"{host}:{port}: cannot listen there ({error.strerror}); try another --port") from None


def serve(run_dir: Path, host: str, port: int) -> int:
    """Serve until Ctrl+C. Each browser tab starts `alexnet-tui attach RUN_DIR`: a view of the run
    and its keys, never a second trainer."""
    check_port(host, port)
    if host not in LOOPBACK:
        print(
            f"alexnet-tui: warning: serving on {host}:{port}: anyone who can reach it and has the URL's token "
            "can pause and stop this run, over plain http; prefer 127.0.0.1 and ssh -L",
            file=sys.stderr,
        )
    token = secrets.token_urlsafe(24)
    # Each tab's requests say they came through this page (the run also records their file's owner).
    via = f"{VIA_ENV}=" + shlex.quote(f"serve on {host}:{port}")
    command = via + " " + shlex.join([sys.executable, "-m", "alexnet_tui", "attach", str(run_dir)])
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"serving {run_dir} on http://{shown}:{port}/?token={token} (Ctrl+C to stop serving; the run goes on)",
          flush=True)  # fmt: skip
    guarded_server(command, host, port, f"alexnet-tui: {run_dir.name}", token).serve()
    return 0
