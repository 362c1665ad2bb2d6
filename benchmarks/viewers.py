"""How fast the viewers start and how much memory they hold: `runs`, the first frame of `attach` and
`watch` in a real pty (read through pyte, as the screen tests read it), a viewer's memory after a
tour of its tabs, and `predict`'s first output. Beside each, the cost of loading the trainer (torch
and the engine) in the same run: what every viewer paid before they stopped importing it.

    pip install -e '.[test]'      # pyte
    python benchmarks/viewers.py  # about a minute on 2 cores
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.terminal import Terminal  # noqa: E402  (the screen tests' pty and terminal emulator)

TINY = ["--data", "demo", "--image-size", "67", "--demo-size", "48", "--batch-size", "8", "--width", "0.0625"]
TRIES = 3  # each start is timed this often; the median is printed
TARGETS = {"runs": 1.0, "first frame": 2.0, "viewer RSS MiB": 150.0, "predict first output": 1.0}


def run_timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process, from its own rusage (wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode})")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def first_output(args: list[str], cwd: Path, answer: str) -> tuple[float, float]:
    """Seconds to the first text on a terminal's screen (predict says what it loads on a terminal
    only), and to `answer`."""
    with Terminal(args, size=(100, 30), cwd=cwd) as term:
        term.wait_for(lambda text: text.strip() != "", timeout=60)
        first = time.monotonic() - term.started
        term.wait_for(answer, timeout=120)
        whole = time.monotonic() - term.started
        term.wait_exit(30)
    return first, whole


def screen_start(args: list[str], cwd: Path, shown: str, tour: bool) -> tuple[float, float]:
    """Seconds from exec to `shown` on a 100x30 screen; the viewer's RSS (MiB) after it drew each
    tab that needs no model (train, charts, predict, report, log)."""
    with Terminal(args, size=(100, 30), cwd=cwd) as term:
        term.wait_for(shown, timeout=60)
        first_frame = time.monotonic() - term.started
        if tour:
            for key in "34561":
                term.press(key)
                time.sleep(0.4)
                term.press("escape")  # Charts and Predict give their field the keys
        rss = psutil.Process(term.process.pid).memory_info().rss / 2**20
        term.press("q")
        term.wait_exit(20)
    return first_frame, rss


def median(values: list[float]) -> float:
    return statistics.median(values)


def line(name: str, measured: float, unit: str, target_key: str | None, baseline: float | None = None) -> str:
    text = f"{name:<34} {measured:8.2f} {unit:<4}"
    if baseline:
        text += f"  ({measured / baseline:.2f} of loading the trainer, {baseline:.2f} {unit})"
    if target_key:
        target = TARGETS[target_key]
        text += f"  target < {target:g}: {'met' if measured < target else 'MISSED'}"
    return text


def main() -> int:
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="viewers-bench-") as folder:
        work = Path(folder)
        env_cache = {"XDG_CACHE_HOME": str(work / "cache")}
        os.environ.update(env_cache)
        print("making a finished run and a live one ...", flush=True)
        subprocess.run(
            [python, "-m", "alexnet_tui", "--no-ui", *TINY, "--epochs", "2", "--out", "runs/done"],
            cwd=work, check=True, capture_output=True,
        )  # fmt: skip
        live = subprocess.Popen(
            [python, "-m", "alexnet_tui", "--no-ui", *TINY, "--demo-size", "600", "--epochs", "500",
             "--out", "runs/live"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            while (
                not (work / "runs/live/metrics.jsonl").is_file()
                or b"epoch_started" not in (work / "runs/live/metrics.jsonl").read_bytes()
            ):
                time.sleep(0.2)

            load_trainer = [run_timed([python, "-c", "import alexnet_tui.engine.trainer"], work) for _ in range(TRIES)]
            trainer_s, trainer_mib = median([t for t, _ in load_trainer]), median([m for _, m in load_trainer])
            runs = [run_timed([python, "-m", "alexnet_tui", "runs", "runs"], work) for _ in range(TRIES)]
            watch = [screen_start(["watch", "runs/done"], work, "FINISHED", tour=i == 0) for i in range(TRIES)]
            attach = [screen_start(["attach", "runs/live"], work, "TRAINING", tour=i == 0) for i in range(TRIES)]
            picture = work / "one.png"
            from PIL import Image

            Image.new("RGB", (96, 96), (200, 40, 40)).save(picture)
            predict = [
                first_output(["predict", "--checkpoint", "runs/done/best.pt", str(picture)], work, "one.png:")
                for _ in range(TRIES)
            ]
        finally:
            live.terminate()
            live.wait(30)

    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; medians of {TRIES}\n")
    print(line("loading the trainer (torch)", trainer_s, "s", None))
    print(line("alexnet-tui runs", median([t for t, _ in runs]), "s", "runs", trainer_s))
    print(line("watch: first frame (FINISHED)", median([t for t, _ in watch]), "s", "first frame", trainer_s))
    print(line("attach: first frame (TRAINING)", median([t for t, _ in attach]), "s", "first frame", trainer_s))
    print(line("predict: first output", median([t for t, _ in predict]), "s", "predict first output"))
    print(line("predict: whole answer", median([t for _, t in predict]), "s", None))
    print()
    print(line("loading the trainer: peak RSS", trainer_mib, "MiB", None))
    print(line("runs: peak RSS", median([m for _, m in runs]), "MiB", "viewer RSS MiB", trainer_mib))
    print(line("watch: RSS after a tour of tabs", watch[0][1], "MiB", "viewer RSS MiB", trainer_mib))
    print(line("attach: RSS after a tour of tabs", attach[0][1], "MiB", "viewer RSS MiB", trainer_mib))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
