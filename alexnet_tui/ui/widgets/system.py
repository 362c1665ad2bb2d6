"""The machine panel: device, memory, CPU per core, GPU, throughput and where each step waits."""

from __future__ import annotations

import os
import resource

from textual.widgets import Static

DATA_BOUND_SHARE = 0.3  # of a step spent waiting for the loader: more workers would help
COMPUTE_BOUND_SHARE = 0.1
BLOCKS = " ▁▂▃▄▅▆▇█"


def process_rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), else its peak."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_line() -> str | None:
    """One block per core, as busy as it was since the last call (psutil keeps the counters)."""
    try:
        import psutil
    except ImportError:
        return None
    cores = psutil.cpu_percent(percpu=True)
    blocks = "".join(BLOCKS[min(8, round(load / 12.5))] for load in cores)
    return f"CPU per core: {blocks}  ({sum(cores) / max(len(cores), 1):.0f}% of {len(cores)})"


def gpu_lines(index: int) -> list[str]:
    """Utilisation, memory, temperature and power from NVML (the optional nvidia-ml-py)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        busy = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        celsius = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        watts = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
    except pynvml.NVMLError as error:
        return [f"GPU: NVML unavailable ({error})"]
    return [f"GPU: {busy}% busy, {memory.used / 2**30:.1f}/{memory.total / 2**30:.1f} GiB, {celsius} C, {watts:.0f} W"]


def verdict(data_wait_share: float | None) -> str | None:
    if data_wait_share is None:
        return None
    if data_wait_share >= DATA_BOUND_SHARE:
        return "data-bound: raise --workers (or keep the image cache on)"
    if data_wait_share <= COMPUTE_BOUND_SHARE:
        return "compute-bound: the loader keeps up"
    return None


class SystemPanel(Static):
    """Refreshed once a second by the app, from this process (a run attached to shows its figures
    from metrics.jsonl; memory and CPU are this machine's)."""

    DEFAULT_CSS = "SystemPanel { height: auto; padding: 0 1; border-top: solid $primary; }"

    def on_mount(self) -> None:
        cpu_line()  # starts psutil's counters: the first draw (when the tab is first shown) is not all zeros

    def show(self, device: str, images_per_sec: float | None, data_wait_share: float | None) -> None:
        import torch

        lines = [f"device: {device}"]
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device.split()[0]).index or 0
            total = torch.cuda.get_device_properties(index).total_memory / 2**30
            allocated = torch.cuda.memory_allocated(index) / 2**30
            peak = torch.cuda.max_memory_allocated(index) / 2**30
            lines.append(f"GPU memory: {allocated:.2f} GiB allocated, {peak:.2f} peak, {total:.1f} total")
            lines += gpu_lines(index)
        else:
            lines.append(f"process memory (RSS): {process_rss_mib():.0f} MiB")
        cpu = cpu_line()
        if cpu:
            lines.append(cpu)
        lines.append(f"images/s: {images_per_sec:.1f}" if images_per_sec is not None else "images/s: -")
        if data_wait_share is not None:
            lines.append(f"waiting for data: {data_wait_share:.0%} of each step")
        said = verdict(data_wait_share)
        if said:
            lines.append(said)
        self.update("\n".join(lines))
