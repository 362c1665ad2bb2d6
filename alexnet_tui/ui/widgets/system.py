"""The machine panel: whose figures they are, memory, CPU per core, GPU, throughput and where each
step waits. The figures are the trainer's own (MachineSample events, from this process or from
metrics.jsonl), so a viewer on a laptop or a served page never shows its own memory as the run's."""

from __future__ import annotations

import os
import socket
import time

import psutil
from textual.widgets import Static

from alexnet_tui.engine import events as ev

DATA_BOUND_SHARE = 0.3  # of a step spent waiting for the loader: more workers would help
COMPUTE_BOUND_SHARE = 0.1
BLOCKS = " ▁▂▃▄▅▆▇█"
STALE_S = 15.0  # a sample older than this is said with its age (a paused or stopped run)


def cores_text(cores: list[float]) -> str:
    """One block per core, as busy as it was over the sample's interval."""
    blocks = "".join(BLOCKS[min(8, round(load / 12.5))] for load in cores)
    return f"CPU per core: {blocks}  ({sum(cores) / max(len(cores), 1):.0f}% of {len(cores)})"


def verdict(data_wait_share: float | None) -> str | None:
    if data_wait_share is None:
        return None
    if data_wait_share >= DATA_BOUND_SHARE:
        return "data-bound: raise --workers (or keep the image cache on)"
    if data_wait_share <= COMPUTE_BOUND_SHARE:
        return "compute-bound: the loader keeps up"
    return None


def sample_lines(sample: ev.MachineSample, now: float) -> list[str]:
    """The trainer's figures, titled with whose they are (and how old, once it has gone quiet)."""
    age = now - sample.time
    said_age = f", {age:.0f} s ago" if age > STALE_S else ""
    lines = [
        f"trainer: pid {sample.pid} on {sample.host}{said_age}",
        f"device: {sample.device}",
        f"trainer memory (RSS): {sample.rss_mib:.0f} MiB, CPU {sample.process_cpu_percent:.0f}% of a core",
    ]
    if sample.gpu_total_gib is not None:
        lines.append(
            f"GPU memory: {sample.gpu_allocated_gib:.2f} GiB allocated, {sample.gpu_peak_gib:.2f} peak, "
            f"{sample.gpu_total_gib:.1f} total"
        )
    lines += sample.gpu_lines
    lines.append(cores_text(sample.cores_percent))
    return lines


class SystemPanel(Static):
    """Refreshed once a second by the app while the Charts tab is shown. The figures are the latest
    MachineSample's (show_sample); before a run has sent one, this process's own, said as such."""

    DEFAULT_CSS = "SystemPanel { height: auto; padding: 0 1; border-top: solid $primary; }"

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sample: ev.MachineSample | None = None  # the trainer's latest figures

    def on_mount(self) -> None:
        psutil.cpu_percent(percpu=True)  # starts psutil's counters for the figures shown before a run

    def show_sample(self, sample: ev.MachineSample | None) -> None:
        """Keep the trainer's latest figures (None for a new run); drawn by the next show()."""
        self.sample = sample

    def show(
        self, device: str, images_per_sec: float | None, data_wait_share: float | None, run_started: bool = False
    ) -> None:
        """Redraw: the trainer's figures if a sample came, else (run_started False) this process's."""
        if self.sample is not None:
            lines = sample_lines(self.sample, time.time())
        elif run_started:  # or a run from before the trainer sent samples
            lines = [f"device: {device}", "trainer: no figures yet (it sends them every few seconds of training)"]
        else:  # nothing runs yet: this process is the one that will train
            rss = psutil.Process().memory_info().rss / 2**20
            lines = [
                f"this process (no run yet): pid {os.getpid()} on {socket.gethostname()}",
                f"device: {device}",
                f"memory (RSS): {rss:.0f} MiB",
                cores_text(psutil.cpu_percent(percpu=True)),
            ]
        lines.append(f"images/s: {images_per_sec:.1f}" if images_per_sec is not None else "images/s: -")
        if data_wait_share is not None:
            lines.append(f"waiting for data: {data_wait_share:.0%} of each step")
        said = verdict(data_wait_share)
        if said:
            lines.append(said)
        self.update("\n".join(lines))
