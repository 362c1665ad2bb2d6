"""Choosing the device and the mixed-precision mode once, with errors a user can act on."""

from __future__ import annotations

from functools import cache

import torch

from alexnet_tui.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA when there is one; cuda / cuda:N must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"--device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu (or auto)")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


@cache
def cpu_has_native_bf16() -> bool:
    """bf16 autocast pays on CPUs with AMX; elsewhere it is slower than fp32: emulated on AVX2
    (~40 s a step against ~2 s, measured), and even with AVX512-BF16 but no AMX (~1.5 s against
    ~0.9 s at 227 px, batch 32, measured on a 2-core Xeon)."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = file.read()
    except OSError:
        return False
    return "amx_bf16" in flags


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"
