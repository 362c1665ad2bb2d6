"""The one writer (atomic) and the one reader (weights_only, checked) of checkpoints."""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import torch

from alexnet_tui.errors import UsageError
from alexnet_tui.model import ARCHITECTURE
from alexnet_tui.safe_files import unguessable_temp

CHECKPOINT_FORMAT = 1
CHECKSUM = "tensors_crc32"  # the payload entry load_checkpoint checks


class CheckpointError(UsageError):
    """A checkpoint that cannot be used: named in one line, exit code 2."""


class CheckpointSaveError(OSError):
    """Saving failed (disk full, folder gone, no permission); the previous file is untouched."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write to a temp file beside the target, fsync, then os.replace: a reader sees the old file
    or the new one, never half of one, even if the process dies mid-write."""
    path = Path(path)
    temp = unguessable_temp(path)  # created exclusively: never a name another user linked in first
    try:
        # One CRC-32 over the tensors' bytes, which load_checkpoint checks: torch.load checks none (a
        # flipped byte in last.pt resumed without a word). zlib's runs at ~2 GB/s with the GIL let go;
        # torch's own per-record CRC32 took 0.5-2 s of CPU per ~1 GB here, and is still never checked.
        payload = {**payload, CHECKSUM: tensors_crc32(payload)}
        with open(temp, "xb") as file:
            crc32 = torch.serialization.get_crc32_options()
            torch.serialization.set_crc32_options(False)
            try:
                torch.save(payload, file)
            finally:
                torch.serialization.set_crc32_options(crc32)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise CheckpointSaveError(
            f"could not save {path} ({error.strerror or error}); the previous {path.name} is intact"
        ) from error
    except RuntimeError as error:
        # torch.save reports a failed write(2) to a file object (a full disk) as a RuntimeError
        # ("unexpected pos ..."), with the OSError that caused it as the exception's context.
        temp.unlink(missing_ok=True)
        cause = error.__context__
        if not isinstance(cause, OSError):
            raise
        raise CheckpointSaveError(
            f"could not save {path} ({cause.strerror or cause}); the previous {path.name} is intact"
        ) from cause
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


REQUIRED = {"model": dict, "num_classes": int, "image_size": int}  # what every reader of a checkpoint needs


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with weights_only=True (no code runs from the file) and check it is one of ours."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        # torch words it "Unsupported global: GLOBAL builtins.print" or, for a module it blocks
        # outright (os.system), "Trying to load unsupported GLOBAL posix.system ...".
        if "unsupported global" in text.lower():
            culprit = next((line.strip() for line in text.splitlines() if "unsupported global" in line.lower()), "")
            raise CheckpointError(
                f"checkpoint {path}: refused, it holds objects that could run code, not just weights ({culprit[:100]})"
            ) from None
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        # torch's words run on ("... This is an internal miniz error. If you ..."): its first sentence.
        said = str(error).split(". ")[0].strip().rstrip(".")
        raise CheckpointError(
            f"checkpoint {path}: not a readable PyTorch checkpoint ({said[:160]}); the file is cut short or damaged"
        ) from None
    if not isinstance(payload, dict) or payload.get("architecture") != ARCHITECTURE or "model" not in payload:
        raise CheckpointError(f"checkpoint {path}: not an alexnet-tui checkpoint")
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind) or isinstance(payload.get(key), bool):
            raise CheckpointError(f"checkpoint {path}: damaged or not one of ours ({key!r} is missing or wrong)")
    if CHECKSUM in payload and tensors_crc32(payload) != payload[CHECKSUM]:  # files from before it have none
        raise CheckpointError(
            f"checkpoint {path}: damaged (its weights' CRC-32 does not match what was written: a disk or copy "
            "error); use best.pt, an earlier copy, or start again"
        )
    payload["path"] = str(path)
    return payload


def tensors_crc32(payload: Any) -> int:
    """CRC-32 of the bytes of every tensor in `payload`, in its order (dicts keep theirs through a
    save and a load); the checksum's own entry is left out."""
    crc = 0
    pending = [payload]
    while pending:
        value = pending.pop()
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1)
            if data.numel():
                crc = zlib.crc32(data.view(torch.uint8).numpy(), crc)
        elif isinstance(value, dict):
            pending += reversed([item for key, item in value.items() if key != CHECKSUM])
        elif isinstance(value, list | tuple):
            pending += reversed(value)
    return crc


def load_weights(module: Any, payload: dict[str, Any]) -> None:
    """The checkpoint's weights into `module`, strictly: keys that do not fit are one line, not torch's
    list of every missing and unexpected name."""
    try:
        module.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        expected, given = set(module.state_dict()), set(payload["model"])
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        if missing or unexpected:
            said = f"{len(missing)} missing, e.g. {missing[0]}" if missing else "none missing"
            said += f"; {len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else ""
        else:  # the names fit, a shape does not: torch's line naming it
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            said = lines[-1][:160] if lines else type(error).__name__
        raise CheckpointError(
            f"checkpoint {payload.get('path', '')}: its weights do not fit the network it names ({said})"
        ) from None


def checkpoint_arch(payload: dict[str, Any]) -> str:
    """The --arch a checkpoint was made with; checkpoints from before --arch are the tutorial's."""
    return str(payload.get("arch", "tutorial"))


def check_compatible(
    payload: dict[str, Any],
    num_classes: int,
    image_size: int,
    class_names: list[str],
    width: float = 1.0,
    arch: str = "tutorial",
) -> None:
    """Refuse a checkpoint made for another architecture, class count, image size, width or class list."""
    where = payload.get("path", "checkpoint")
    if checkpoint_arch(payload) != arch:
        raise CheckpointError(f"{where}: made for --arch {checkpoint_arch(payload)}, not {arch}")
    if payload.get("width", 1.0) != width:
        raise CheckpointError(f"{where}: made for --width {payload.get('width', 1.0)}, not {width}")
    if payload["num_classes"] != num_classes:
        raise CheckpointError(f"{where}: made for {payload['num_classes']} classes, this data has {num_classes}")
    if payload["image_size"] != image_size:
        raise CheckpointError(f"{where}: made for --image-size {payload['image_size']}, not {image_size}")
    if list(payload["class_names"]) != list(class_names):
        raise CheckpointError(
            f"{where}: made for classes {', '.join(payload['class_names'])}, this data has {', '.join(class_names)}"
        )
