"""The training process's own figures (memory, CPU, GPU), sampled now and then at batch boundaries
and emitted as MachineSample events: metrics.jsonl carries them to viewers wherever they run."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import psutil
import torch

from alexnet_tui.engine import events as ev

FIRST_SAMPLE_S = 1.0  # the panel has the trainer's figures soon after training starts
SAMPLE_INTERVAL_S = 5.0  # then often enough for a panel, rare enough to cost nothing per batch


class Nvml:
    """The optional nvidia-ml-py, initialised once: utilisation, memory, temperature and power."""

    def __init__(self, properties: Any) -> None:
        self.handle: Any = None
        self.error: str | None = None
        try:
            import pynvml
        except ImportError:
            self.error = ""  # not installed: nothing to say
            return
        self.pynvml = pynvml
        try:
            pynvml.nvmlInit()
            # By PCI address: under CUDA_VISIBLE_DEVICES torch's index is not NVML's.
            address = f"{properties.pci_domain_id:x}:{properties.pci_bus_id:x}:{properties.pci_device_id:x}.0"
            self.handle = pynvml.nvmlDeviceGetHandleByPciBusId(address)
        except pynvml.NVMLError as error:
            self.error = f"GPU: NVML unavailable ({error})"

    def lines(self) -> list[str]:
        if self.handle is None:
            return [self.error] if self.error else []
        nvml = self.pynvml
        try:
            busy = nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            memory = nvml.nvmlDeviceGetMemoryInfo(self.handle)
            celsius = nvml.nvmlDeviceGetTemperature(self.handle, nvml.NVML_TEMPERATURE_GPU)
            watts = nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000
        except nvml.NVMLError as error:
            return [f"GPU: NVML unavailable ({error})"]
        used, total = memory.used / 2**30, memory.total / 2**30
        return [f"GPU: {busy}% busy, {used:.1f}/{total:.1f} GiB in use, {celsius} C, {watts:.0f} W"]


class MachineSampler:
    """Emits a MachineSample when asked at a batch boundary: after FIRST_SAMPLE_S, then at most every
    SAMPLE_INTERVAL_S. Between samples a call is one clock read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.process = psutil.Process()
        self.process.cpu_percent()  # psutil measures from one call to the next: start the clocks
        psutil.cpu_percent(percpu=True)
        self.next_at = time.monotonic() + FIRST_SAMPLE_S
        self.nvml: Nvml | None = None

    def maybe_emit(self, emit: ev.Subscriber) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + SAMPLE_INTERVAL_S
        emit(self.sample())

    def sample(self) -> ev.MachineSample:
        sample = ev.MachineSample(
            self.pid,
            self.host,
            self.process.memory_info().rss / 2**20,
            self.process.cpu_percent(),
            psutil.cpu_percent(percpu=True),
            str(self.device),
        )
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            sample.gpu_allocated_gib = torch.cuda.memory_allocated(index) / 2**30
            sample.gpu_peak_gib = torch.cuda.max_memory_allocated(index) / 2**30
            properties = torch.cuda.get_device_properties(index)
            sample.gpu_total_gib = properties.total_memory / 2**30
            if self.nvml is None:
                self.nvml = Nvml(properties)
            sample.gpu_lines = self.nvml.lines()
        return sample
