"""A run directory: chosen once, held by one writer for the run's life, and polled for a STOP file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import re
import shutil
import socket
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alexnet_tui.config import TrainConfig, to_toml
from alexnet_tui.engine.control import Command
from alexnet_tui.errors import UsageError
from alexnet_tui.safe_files import replace_text

STOP_FILE = "STOP"
LOCK_FILE = ".lock"
CONTROL_DIR = "control"  # request files from `alexnet-tui attach`, read by the run at batch boundaries
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")  # any of these means the folder holds a run
# What a run writes in its folder: each is opened or replaced through no link, and a link under one
# of these names found at a resume is refused.
OWN_FILES = (*RUN_FILES, "config.toml", "train.log", "stderr.log", "evaluation-val.json", "evaluation-test.json",
             "tensorboard")  # fmt: skip
# RemoteControl.send's names: the request, and its temp name while replace_text writes it (or, from
# earlier versions, .NAME.tmp)
OUR_REQUEST = re.compile(r"\d{20}-[0-9a-f]{8}\.json|\.\d{20}-[0-9a-f]{8}(\.json\.[0-9a-f]{16})?\.tmp")
MAX_REQUEST_BYTES = 4096  # a request is one small JSON object; anything larger is not one


@dataclass(frozen=True)
class Request:
    command: Command
    sender: str  # who asked, in words: "alice@laptop (pid 123)", "a STOP file in the run directory"


def lock_owner(path: Path) -> dict:
    """Who holds (or last held) a run directory's lock: pid and host, as the lock file says."""
    try:
        return json.loads((path / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def process_alive(pid: int) -> bool:
    """A process of this host with that pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_gone(owner: dict) -> bool:
    """The run a lock file names was on this host and its process has ended."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    return not process_alive(pid)


def lock_is_held(path: Path) -> bool:
    """A process holds the folder's lock (its writer is alive, here or on a host that shares the
    folder and its locks). Probed with a shared lock, through no link."""
    try:
        descriptor = os.open(path / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # held
    finally:
        os.close(descriptor)  # also drops the probe's own shared lock
    return False


class RunDirectory:
    """The folder a run writes to. Holding it means an exclusive lock on RUN_DIR/.lock, so a second
    run on the same --out is refused instead of interleaving checkpoints with the first."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd
        self._said_once: set[str] = set()  # control/ not a directory, a STOP directory, requests not set aside

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
        if fresh:
            check_new_or_empty(path)  # before anything in it is made or changed
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UsageError(f"{path / LOCK_FILE} is a link, not a run's lock; remove it and try again") from None
            raise UsageError(f"--out {path}: cannot write there ({error.strerror}); choose another --out") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise held_elsewhere(path) from None
        directory = cls(path, lock_fd)
        try:
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
            # gone are stale. Only files of those names go (a link among them is removed, never followed).
            control = self.path / CONTROL_DIR
            if control.is_symlink() or (control.exists() and not control.is_dir()):
                raise UsageError(f"{control} is not a directory of this run (a link?); remove it and try again")
            links = [name for name in OWN_FILES if (self.path / name).is_symlink()]
            if links:
                raise UsageError(
                    f"{self.path / links[0]} is a link: a run's own files never are (someone else may have "
                    "planted it); remove it and try again"
                )
            temps = [*self.path.glob(".*.pt.tmp*"), *self.path.glob(".*.pt.*.tmp")]  # older and current names
            for leftover in [*temps, self.path / STOP_FILE]:
                leftover.unlink(missing_ok=True)
            for leftover in control.glob("*"):
                if OUR_REQUEST.fullmatch(leftover.name):
                    leftover.unlink(missing_ok=True)
            control.mkdir(exist_ok=True)
        except OSError as error:
            raise UsageError(
                f"--out {self.path}: cannot write there ({error.strerror}); choose another --out"
            ) from None

    def take_requests(self) -> tuple[list[Request], list[str]]:
        """Requests left since the last look, oldest first, each taken once: files under
        RUN_DIR/control/ (from `attach`, on any host that shares the folder) and RUN_DIR/STOP. Also
        what to say of anything else found there: a link, a directory, a FIFO, a file that is not a
        small JSON object is set aside (renamed .refused-NAME, never read again nor deleted), so
        nothing in control/ can block, crash or fail the run."""
        requests, said = [], []
        stop = self.path / STOP_FILE
        try:
            os.unlink(stop)
            requests.append(Request(Command.STOP, "a STOP file in the run directory"))
        except FileNotFoundError:
            pass
        except OSError as error:  # `mkdir STOP`: taken as meant, said once, the folder left alone
            requests.append(Request(Command.STOP, "a STOP directory in the run directory"))
            if "STOP" not in self._said_once:
                self._said_once.add("STOP")
                said.append(f"{stop} is not a file ({error.strerror}): taken as a stop request; remove it to resume")
        try:
            folder = os.open(self.path / CONTROL_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return requests, said
        except OSError as error:  # a link or a file where the folder should be: never followed
            if CONTROL_DIR not in self._said_once:
                self._said_once.add(CONTROL_DIR)
                said.append(
                    f"{self.path / CONTROL_DIR} is not a directory of this run ({error.strerror}); requests are not "
                    "read until it is one (remove it: the next run makes it)"
                )
            return requests, said
        try:
            for name in sorted(os.listdir(folder)):
                if name.startswith(".") or not name.endswith(".json"):
                    continue  # a request still being written (temp name), or one set aside
                if name in self._said_once:
                    continue  # could not be set aside: left as it is, read no more
                record, owner = read_request(folder, name)
                if isinstance(record, str) or record.get("command") not in tuple(Command):
                    why = record if isinstance(record, str) else f"names no command ({', '.join(Command)})"
                    try:
                        os.rename(name, f".refused-{name}", src_dir_fd=folder, dst_dir_fd=folder)
                        said.append(f"request {CONTROL_DIR}/{name} {why}: set aside as {CONTROL_DIR}/.refused-{name}")
                    except OSError as error:
                        self._said_once.add(name)
                        said.append(f"request {CONTROL_DIR}/{name} {why}; it could not be set aside "
                                    f"({error.strerror}): left as it is, not read again")  # fmt: skip
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=folder)
                sender = sender_text(str(record.get("sender", "attach")), owner)
                requests.append(Request(Command(record["command"]), sender))
        finally:
            os.close(folder)
        return requests, said

    def write_config(self, config: TrainConfig) -> None:
        replace_text(self.path / "config.toml", to_toml(config))

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None


def held_elsewhere(path: Path) -> UsageError:
    """What to say of a folder whose lock another process holds: the run it names, or, where that run
    has ended, a process that is not a run (a reader's shared lock)."""
    owner = lock_owner(path)
    if owner_is_gone(owner):
        return UsageError(
            f"{path / LOCK_FILE} is held by a process that is not a run (pid {owner.get('pid')}, which it "
            f"names, has ended): see fuser {path / LOCK_FILE}, and try again once it lets go"
        )
    who = f" (pid {owner.get('pid')} on {owner.get('host')})" if owner else ""
    return UsageError(
        f"--out {path}: another run{who} is writing there; attach to it (alexnet-tui attach {path}) "
        "or choose another --out"
    )


def check_new_or_empty(path: Path) -> None:
    """A new run starts only in a new or empty folder: one that holds anything (a run, a user's files)
    is refused before it is touched."""
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UsageError(
            f"--out {path}: cannot write there (it, or a folder above it, is a file); choose another --out"
        ) from None
    except OSError as error:
        raise UsageError(f"--out {path}: cannot read it ({error.strerror}); choose another --out") from None
    if LOCK_FILE in names and lock_is_held(path):
        raise held_elsewhere(path)
    if any(name in RUN_FILES for name in names):
        raise UsageError(f"--out {path} already holds a run; continue it with --resume {path} or choose another --out")
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UsageError(
            f"--out {path} already holds files ({shown}); a new run starts in a new or empty folder: "
            "choose another --out"
        )


def read_request(folder: int, name: str) -> tuple[dict | str, str]:
    """A request file in the folder open as `folder`: its JSON object and its owner's name, or why it
    is not a request. Opened without following a link and without blocking (a FIFO would hang the
    run), checked to be a small regular file before a byte is read."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError as error:
        return ("is a link" if error.errno == errno.ELOOP else f"cannot be read ({error.strerror})"), ""
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file", ""
        if info.st_size > MAX_REQUEST_BYTES:
            return f"is larger than a request ({info.st_size} bytes)", ""
        data = os.read(descriptor, MAX_REQUEST_BYTES + 1)
    except OSError as error:
        return f"cannot be read ({error.strerror})", ""
    finally:
        os.close(descriptor)
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "is not JSON", ""
    if not isinstance(record, dict):
        return "does not hold a JSON object", ""
    return record, user_name(info.st_uid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def sender_text(claimed: str, owner: str) -> str:
    """Who asked: the request's own word, and the file's owner where that word names someone else
    (any user who may write the folder can claim to be anyone; the owner cannot be forged)."""
    return claimed if not owner or claimed.startswith(f"{owner}@") else f"{claimed} (file owned by {owner})"


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
