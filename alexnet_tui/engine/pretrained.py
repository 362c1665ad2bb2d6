"""--pretrained: torchvision's ImageNet AlexNet weights, fetched once into torch's hub cache (or given with
--weights FILE), verified against the published sha256 and size, checked against the network, and loaded
with the last layer left as built for the data's classes.

torchvision itself checks a file only when it downloads it (and then only the hash's first 8 digits);
here every file, downloaded, cached or given, is checked in full each run unless --no-verify is given.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from alexnet_tui.errors import UsageError
from alexnet_tui.transfer import DownloadError, fetch

try:
    import fcntl
except ImportError:  # Windows: two runs downloading at once would each fetch their own .part
    fcntl = None

# The one place that names the published file (tests point these at a file of their own).
WEIGHTS_URL = AlexNet_Weights.IMAGENET1K_V1.url  # https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
WEIGHTS_SHA256 = "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"
WEIGHTS_SIZE = 244_408_911
HEAD = "classifier.6"  # the last Linear: replaced by one for the data's classes
RETRIES = 5  # a cut or stalled transfer is tried again, going on from the bytes it has
BACKOFF_S = 2.0  # the first wait before a retry, doubling

Notify = Callable[[str], None]
Report = Callable[[int, int], None]


def download(url: str, target: Path, report: Report, notify: Notify) -> None:
    """url -> target through a `.part` file, renamed when whole (alexnet_tui/transfer.py, as `alexnet-tui
    download`: a cut or stalled connection is retried with backoff, resuming with Range checked by If-Range,
    so a file that changed on the server starts over; the sha256 check that follows catches the rest)."""
    fetch(url, target, lambda done, total: report(done, total or WEIGHTS_SIZE), RETRIES, notify, BACKOFF_S)


def hub_path() -> Path:
    """Where torchvision keeps it too: $TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(WEIGHTS_URL).path).name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, label: str, remedy: str) -> None:
    """The published size and sha256, or a UsageError naming what differs and what to do."""
    try:
        size = path.stat().st_size
        digest = sha256_of(path) if size == WEIGHTS_SIZE else ""
    except OSError as error:
        raise UsageError(f"{label}: cannot read it ({error.strerror})") from None
    if size != WEIGHTS_SIZE:
        raise UsageError(
            f"{label}: {size:,} bytes, not the {WEIGHTS_SIZE:,} of torchvision's ImageNet AlexNet "
            f"(a truncated or another file); {remedy}"
        )
    if digest != WEIGHTS_SHA256:
        raise UsageError(f"{label}: sha256 {digest}, expected {WEIGHTS_SHA256}; {remedy}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One download at a time per cache (two runs, or the ranks of a torchrun job, start together)."""
    if fcntl is None:
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def weights_file(given: str | None, verify_it: bool, notify: Notify, report: Report) -> Path:
    """The weights' file, checked: --weights FILE as given, or the hub cache's copy, downloaded first if
    it is not there. Raises UsageError (exit 2) for a bad file, DownloadError (exit 1) for the network."""
    trust = "pass --no-verify if you trust this file"
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise UsageError(f"--weights {path}: no such file")
        if verify_it:
            verify(path, f"--weights {path}", trust)
        return path
    path = hub_path()
    label = f"--pretrained: {path}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{label}: cannot create its folder ({error.strerror}); set TORCH_HOME") from None
    with _locked(path):
        if path.is_file():
            if verify_it:
                verify(path, label, f"delete it to download it again, or {trust}")
            return path
        notify(f"downloading torchvision's ImageNet AlexNet weights ({WEIGHTS_SIZE / 1e6:.0f} MB) to {path}")
        try:
            download(WEIGHTS_URL, path, report, notify)
        except DownloadError as error:
            raise DownloadError(
                f"{error}; without internet, copy {path.name} from another machine and give --weights FILE"
            ) from None
        if verify_it:
            try:
                verify(path, f"--pretrained: the download from {WEIGHTS_URL}", "it was removed; try again")
            except UsageError:
                path.unlink(missing_ok=True)
                raise
    return path


def read_state_dict(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The tensors in a weights file: a plain state_dict (torchvision's) or an alexnet-tui checkpoint's model."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling, zip and I/O errors alike: one line, not a traceback
        raise UsageError(f"{label}: not a readable PyTorch weights file ({_why_unreadable(path, error)})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict) and "architecture" in loaded:
        loaded = loaded["model"]  # one of our checkpoints
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UsageError(f"{label}: holds no state_dict of weights")
    return loaded


def _why_unreadable(path: Path, error: Exception) -> str:
    """What torch.load's error means for the user, in a few words (its own text runs to paragraphs)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # e.g. Permission denied
    text = str(error)
    if "Weights only load failed" in text:
        if zipfile.is_zipfile(path):
            return "it holds Python objects besides tensors; only a state_dict or a checkpoint is loaded"
        return "truncated, another kind of file, or one holding Python objects besides tensors"
    if "central directory" in text or not zipfile.is_zipfile(path):
        return "truncated, or not a file torch.save wrote"
    first = text.splitlines()[0] if text.strip() else type(error).__name__
    return first if len(first) <= 100 else first[:100].rsplit(" ", 1)[0] + " ..."


def check_fits(state: dict[str, torch.Tensor], label: str) -> None:
    """Refuse weights made for another network, naming the first key or shape that does not fit."""
    with torch.device("meta"):
        expected = alexnet(weights=None).state_dict()
    other = "weights for another architecture than torchvision's AlexNet"
    missing = [key for key in expected if key not in state]
    if missing:
        raise UsageError(f"{label}: {other} (no {missing[0]})")
    extra = [key for key in state if key not in expected]
    if extra:
        raise UsageError(f"{label}: {other} (unexpected {extra[0]})")
    for key, tensor in expected.items():
        shape, wanted = list(state[key].shape), list(tensor.shape)
        if key.startswith(HEAD + "."):
            shape, wanted = shape[1:], wanted[1:]  # any number of classes: the head is replaced
        if shape != wanted:
            raise UsageError(f"{label}: {other} ({key} is {list(state[key].shape)}, it needs {list(tensor.shape)})")


def load_pretrained(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Everything but the head from `state` (checked by check_fits); the head keeps its seeded init."""
    body = {key: value for key, value in state.items() if not key.startswith(HEAD + ".")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    assert not unexpected and all(key.startswith(HEAD + ".") for key in missing), (missing, unexpected)


def pretrained_weights(given: str | None, verify_it: bool, notify: Notify, report: Report) -> dict[str, torch.Tensor]:
    """Fetch or find, verify, read and check the ImageNet weights; every failure is one line."""
    path = weights_file(given, verify_it, notify, report)
    label = f"--weights {path}" if given else f"--pretrained: {path}"
    state = read_state_dict(path, label)
    check_fits(state, label)
    notify(f"ImageNet weights: {path} ({'sha256 and size verified' if verify_it else 'not verified: --no-verify'})")
    return state
