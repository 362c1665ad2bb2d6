"""What the terminal shows once the screen is gone: where the run is and how to reach it again."""

from __future__ import annotations

from pathlib import Path

from alexnet_tui.engine.events import RunState


def farewell(state: RunState, run_dir: Path | None, attached: bool, hung_up: bool) -> str | None:
    if run_dir is None:
        return None
    if attached:
        if state.busy:
            return f"left {run_dir}; the run goes on: alexnet-tui attach {run_dir}"
        if state == RunState.INTERRUPTED:
            return f"left {run_dir} (its process is gone): alexnet-tui --no-ui --resume {run_dir}"
        return f"left {run_dir} ({state}): alexnet-tui watch {run_dir}"
    if state == RunState.FINISHED:
        return f"run {run_dir} finished: alexnet-tui evaluate --checkpoint {run_dir}"
    if hung_up or state == RunState.IDLE:
        return None
    if state == RunState.FAILED:
        return f"run {run_dir} failed: its log is in the folder; alexnet-tui --resume {run_dir}"
    return (
        f"run {run_dir} {state} and saved: go on with alexnet-tui --resume {run_dir} "
        f"(headless: alexnet-tui --no-ui --resume {run_dir})"
    )
