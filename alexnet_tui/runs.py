"""`alexnet-tui runs [DIR]`: what each run directory holds, read from its metrics.jsonl."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from alexnet_tui.engine.events import RunState
from alexnet_tui.engine.remote import run_is_live
from alexnet_tui.engine.run_dir import process_alive
from alexnet_tui.errors import UsageError
from alexnet_tui.metrics import read_metrics


def summarize_run(run_dir: Path) -> dict[str, Any] | None:
    """One run's row; None when the folder holds no run. A run this user cannot read, or whose
    metrics.jsonl another version or a fault damaged, is a row that says so: one bad run never
    hides the listing."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    try:
        return _summary(run_dir, read_metrics(metrics))
    except OSError as error:
        return _unreadable(run_dir, f"unreadable ({error.strerror})")
    except (KeyError, TypeError, ValueError, IndexError):
        return _unreadable(run_dir, "damaged")


def _unreadable(run_dir: Path, state: str) -> dict[str, Any]:
    return {"run": str(run_dir), "state": state, "live": run_is_live(run_dir), "host": "", "epochs": "?",
            "best_val_loss": None, "best_val_acc": None, "device": "", "started": ""}  # fmt: skip


def _summary(run_dir: Path, records: list[dict]) -> dict[str, Any] | None:
    starts = [r for r in records if r.get("event") == "run_started"]
    if not starts:
        return None
    states = [r["state"] for r in records if r.get("event") == "state"]
    state = RunState(states[-1]) if states else RunState.IDLE
    last_start = starts[-1]
    live = run_is_live(run_dir)
    if state.busy and not live:
        same_host = last_start.get("host") == socket.gethostname()
        if not same_host or not last_start.get("pid") or not process_alive(last_start["pid"]):
            state = RunState.INTERRUPTED  # the process is gone without saying so (kill -9, power loss)
    epochs = [r for r in records if r.get("event") == "epoch"]
    best = [r for r in epochs if r.get("best")]
    return {
        "run": str(run_dir),
        "state": state,
        "live": live,
        "host": last_start.get("host", ""),
        "epochs": f"{epochs[-1]['epoch']}/{epochs[-1]['epochs']}" if epochs else f"0/{last_start['config']['epochs']}",
        "best_val_loss": best[-1]["val_loss"] if best else None,
        "best_val_acc": best[-1]["val_acc"] if best else None,
        "device": last_start["device"],
        "started": datetime.fromtimestamp(starts[0]["time"]).strftime("%Y-%m-%d %H:%M"),
    }


def list_runs(folder: Path) -> int:
    """Print one line per run directory in `folder` (and `folder` itself if it is one)."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; runs are kept in ./runs unless --out said otherwise")
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    rows = [row for row in map(summarize_run, candidates) if row is not None]
    if not rows:
        print(f"no runs in {folder}")
        return 0
    header = (
        f"{'run':<36} {'state':<12} {'live':<4} {'host':<12} {'epochs':>7} {'best val_loss':>14} {'val_acc':>8}  "
        f"{'device':<16} started"
    )
    print(header)
    for row in rows:
        loss = f"{row['best_val_loss']:.5f}" if row["best_val_loss"] is not None else "-"
        acc = f"{row['best_val_acc']:.5f}" if row["best_val_acc"] is not None else "-"
        print(
            f"{row['run']:<36} {row['state']:<12} {'yes' if row['live'] else 'no':<4} {row['host'][:12]:<12} "
            f"{row['epochs']:>7} {loss:>14} {acc:>8}  {row['device'][:16]:<16} {row['started']}"
        )
    live = [row["run"] for row in rows if row["live"]]
    for run in live:
        print(f"attach: alexnet-tui attach {run}   (browser: alexnet-tui serve {run}, then ssh -L 8000:127.0.0.1:8000)")
    return 0


def compare_runs(run_dirs: list[Path]) -> int:
    """The options that differ between runs, then their best and final figures, side by side."""
    if len(run_dirs) < 2:
        raise UsageError("--compare needs two runs or more")
    summaries, configs = [], []
    for run_dir in run_dirs:
        summary = summarize_run(run_dir)
        if summary is None:
            raise UsageError(f"{run_dir}: not a run directory (no metrics.jsonl with a start); see alexnet-tui runs")
        if summary["epochs"] == "?":
            raise UsageError(f"{run_dir}: its metrics.jsonl is {summary['state']}; compare the others without it")
        records = read_metrics(run_dir / "metrics.jsonl")
        config = [r for r in records if r.get("event") == "run_started"][-1]["config"]
        finished = [r for r in records if r.get("event") == "finished"]
        summary["final"] = finished[-1] if finished else None
        summaries.append(summary)
        configs.append(config)
    keys = sorted({key for config in configs for key in config} - {"out", "resume"})
    rows = [(f"--{key.replace('_', '-')}", [str(config.get(key)) for config in configs]) for key in keys]
    rows = [(name, values) for name, values in rows if len(set(values)) > 1]

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.5f}"

    rows += [
        ("state", [str(s["state"]) for s in summaries]),
        ("epochs", [s["epochs"] for s in summaries]),
        ("best val_loss", [figure(s["best_val_loss"]) for s in summaries]),
        ("best val_acc", [figure(s["best_val_acc"]) for s in summaries]),
        ("final test_loss", [figure(s["final"] and s["final"]["test_loss"]) for s in summaries]),
        ("final test_acc", [figure(s["final"] and s["final"]["test_acc"]) for s in summaries]),
    ]
    names = [Path(s["run"]).name for s in summaries]
    width = max(16, *(len(name) for name in names)) + 2
    print(f"{'':<18}" + "".join(f"{name:>{width}}" for name in names))
    for label, values in rows:
        print(f"{label:<18}" + "".join(f"{value:>{width}}" for value in values))
    return 0
