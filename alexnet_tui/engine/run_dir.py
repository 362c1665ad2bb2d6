"""A run directory: chosen once, held by one writer for the run's life, and polled for a STOP file."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alexnet_tui.config import TrainConfig, to_toml
from alexnet_tui.errors import UsageError

STOP_FILE = "STOP"
LOCK_FILE = ".lock"
CONTROL_DIR = "control"  # request files from `alexnet-tui attach`, read by the run at batch boundaries
COMMANDS = ("pause", "resume", "evaluate", "stop")
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")  # any of these means the folder holds a run


@dataclass(frozen=True)
class Request:
    command: str  # one of COMMANDS
    sender: str  # who asked, in words: "alice@laptop (pid 123)", "a STOP file in the run directory"


def lock_owner(path: Path) -> dict:
    """Who holds (or last held) a run directory's lock: pid and host, as the lock file says."""
    try:
        return json.loads((path / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class RunDirectory:
    """The folder a run writes to. Holding it means an exclusive lock on RUN_DIR/.lock, so a second
    run on the same --out is refused instead of interleaving checkpoints with the first."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, config: TrainConfig, resumed_from: str | None) -> RunDirectory:
        """The run's folder, created and locked. Raises UsageError naming the problem otherwise."""
        if resumed_from is not None:
            origin = Path(resumed_from).parent
            if not config.out or Path(config.out).resolve() == origin.resolve():
                return cls._lock(origin, fresh=False)
            # Going on in another folder: it must not hold a run, and it starts with the best so far.
            directory = cls._lock(Path(config.out), fresh=True)
            if (origin / "best.pt").exists():
                shutil.copy2(origin / "best.pt", directory.path / "best.pt")
            return directory
        if config.out:
            return cls._lock(Path(config.out), fresh=True)
        return cls._lock(unique_default_path(), fresh=True)

    @classmethod
    def _lock(cls, path: Path, fresh: bool) -> RunDirectory:
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UsageError(f"--out {path}: cannot write there ({error.strerror}); choose another --out") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            owner = lock_owner(path)
            who = f" (pid {owner.get('pid')} on {owner.get('host')})" if owner else ""
            raise UsageError(
                f"--out {path}: another run{who} is writing there; attach to it (alexnet-tui attach {path}) "
                "or choose another --out"
            ) from None
        directory = cls(path, lock_fd)
        try:
            if fresh and any((path / name).exists() for name in RUN_FILES):
                raise UsageError(
                    f"--out {path} already holds a run; continue it with --resume {path} or choose another --out"
                )
            directory._take_over()
        except BaseException:
            directory.release()
            raise
        return directory

    def _take_over(self) -> None:
        """Now the folder's only writer: say who we are, and clear what a killed run left behind."""
        try:
            owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
            # Write, then cut to length: a run refused in between still reads a whole owner.
            os.pwrite(self._lock_fd, owner, 0)
            os.ftruncate(self._lock_fd, len(owner))
            # A run killed mid-save (kill -9) leaves its temp file; requests meant for a run that is
            # gone are stale.
            for leftover in [*self.path.glob(".*.pt.tmp*"), self.path / STOP_FILE, *self.path.glob(f"{CONTROL_DIR}/*")]:
                leftover.unlink(missing_ok=True)
            (self.path / CONTROL_DIR).mkdir(exist_ok=True)
        except OSError as error:
            raise UsageError(
                f"--out {self.path}: cannot write there ({error.strerror}); choose another --out"
            ) from None

    def take_requests(self) -> list[Request]:
        """Requests left since the last look, oldest first, each taken once: files under
        RUN_DIR/control/ (from `attach`, on any host that shares the folder) and RUN_DIR/STOP."""
        requests = []
        stop = self.path / STOP_FILE
        if stop.exists():
            stop.unlink(missing_ok=True)
            requests.append(Request("stop", "a STOP file in the run directory"))
        try:
            names = sorted(os.listdir(self.path / CONTROL_DIR))
        except OSError:
            return requests
        for name in names:
            if not name.endswith(".json"):
                continue  # a request still being written (temp name)
            path = self.path / CONTROL_DIR / name
            try:
                record = json.loads(path.read_text())
                path.unlink()
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            if record.get("command") in COMMANDS:
                requests.append(Request(record["command"], str(record.get("sender", "attach"))))
        return requests

    def write_config(self, config: TrainConfig) -> None:
        (self.path / "config.toml").write_text(to_toml(config))

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None


def unique_default_path() -> Path:
    """runs/<timestamp>, with -2, -3, ... when runs start in the same second (mkdir claims it)."""
    base = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise UsageError(f"{path.parent}: cannot write there ({error.strerror}); pass --out") from None
    raise UsageError(f"cannot find a free run directory name beside {base}; pass --out")
