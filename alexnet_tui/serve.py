"""`alexnet-tui serve`: the attached screen in a browser, one `attach` process per tab (textual-serve)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(run_dir: Path, host: str, port: int) -> int:
    """Serve until Ctrl+C. Each browser tab starts `alexnet-tui attach RUN_DIR`: a view of the run
    and its keys, never a second trainer."""
    from textual_serve.server import Server

    if host not in LOOPBACK:
        print(
            f"alexnet-tui: warning: serving on {host}:{port} with no authentication: anyone who can reach it "
            "can pause and stop this run; prefer 127.0.0.1 and ssh -L",
            file=sys.stderr,
        )
    command = shlex.join([sys.executable, "-m", "alexnet_tui", "attach", str(run_dir)])
    print(f"serving {run_dir} on http://{host}:{port} (Ctrl+C to stop serving; the run goes on)", flush=True)
    Server(command, host=host, port=port, title=f"alexnet-tui: {run_dir.name}").serve()
    return 0
