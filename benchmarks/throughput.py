"""Side-by-side training throughput: (a) the tutorial's loop, (b) alexnet-tui --no-ui, (c) the TUI,
and the compute ceiling (benchmarks/ceiling.py: the same training step on a batch already in memory).

    python benchmarks/throughput.py                 # 1200 PetImages-shaped JPEGs, 3 epochs (30 batches of 32)
    python benchmarks/throughput.py --images 20000 --device cuda --skip-tui --jobs 16   # see benchmarks/gpu.sh

Same machine, same data folder, same batch size (32, 227x227), one run after another, each in a process
of its own; (b) and (c) twice, in the order b c c b, averaged (--rounds 1: once each), so that a machine
whose speed drifts during the benchmark weighs on both alike. (b) and (c) hold out 20% (the default
--val-split), so 1200 images train 960 a epoch: 30 batches. Prints, per run: training images/s per epoch
(the engine's own figure: training time only), peak RSS, and for (b) and (c) the epoch-end stall; then
b/a, c/b, b/ceiling and epoch 1's b/a, each against its target.

The epoch-end stall, from the run's metrics.jsonl (every event has the wall-clock `time` at which it
was emitted), for each pair of consecutive epochs e, e+1 of one fit, in two measures:

    stall(e)        = time(`epoch_started` e+1) - end(e) - validation(e) + wait(e+1)
    with step(e)    = start(e+1) - end(e) - validation(e)

    end(e)          time of epoch e's last `batch` event: the end of its last training step (the
                    window holding it was read back, then its events were emitted at once)
    validation(e)   time(`evaluation`) - time(`evaluation_started`) of the validation pass after e
    wait(e+1)       the data wait of e+1's first window, before its first step: starting the loader's
                    iterator and fetching the first batch (the window's `data_wait_share` times its
                    seconds, which are its images over its `images_per_sec`)
    start(e+1)      when epoch e+1's first training step began, estimated as time(F) - k * step,
                    where F is the first `batch` event of e+1, k the highest batch number reported in
                    F's window (the events emitted within 50 ms of F), and step the seconds per batch
                    around the boundary: the median over the last 5 windows of e and the 5 windows
                    after F (a window's seconds since the one before, divided by its batches)

`stall` is what the engine does between two epochs that is neither training nor validation: saving
best.pt and last.pt (the snapshot on the training thread, any wait for the previous write), emitting
events, restarting the data loader. `with step` adds a first step slower than its neighbours (the
background write competing for the cores, a cold cache): it is what the issue's "last batch to next
first batch, minus validation" measures, less one typical step, and on a shared or busy machine it
carries that step's noise (a step's time varies by a second or more on 2 loaded cores). The last
epoch has no successor: E epochs give E-1 of each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def make_pet_images(root: Path, count: int, seed: int = 0, jobs: int = 1) -> Path:
    """Cat/ and Dog/ JPEGs of varied sizes around 500x375, smooth enough to compress like photos;
    `jobs` processes make them (20,000 take ~3 minutes on one core)."""
    for name in ("Cat", "Dog"):
        (root / "PetImages" / name).mkdir(parents=True, exist_ok=True)
    chunks = [(root, range(start, min(start + 500, count)), seed) for start in range(0, count, 500)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_make_images, chunks))
    else:
        for chunk in chunks:
            _make_images(chunk)
    return root / "PetImages"


def _make_images(chunk: tuple[Path, range, int]) -> None:
    root, indices, seed = chunk
    for index in indices:
        rng = np.random.default_rng([seed, index])  # the same image whatever the number of jobs
        width, height = int(rng.integers(300, 501)), int(rng.integers(250, 501))
        small = rng.integers(0, 255, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        noise = rng.normal(0, 8, size=(height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        folder = "Cat" if index % 2 == 0 else "Dog"
        Image.fromarray(pixels).save(root / "PetImages" / folder / f"{index}.jpg", quality=90)


def run(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run a command; return its stdout and its peak RSS in GiB (from wait4, so this child only)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"benchmark step failed: {' '.join(command)}\n{err.read()[-2000:]}")
        return out.read(), usage.ru_maxrss / 2**20


def read_records(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]


def epoch_rates(metrics: Path) -> list[float]:
    return [record["images_per_sec"] for record in read_records(metrics) if record["event"] == "epoch"]


def run_rate(runs: list[Path]) -> float:
    """Training images/s over all epochs of these runs: their images over their training seconds."""
    epochs = [record for path in runs for record in read_records(path) if record["event"] == "epoch"]
    return sum(e["images_per_sec"] * e["seconds"] for e in epochs) / sum(e["seconds"] for e in epochs)


def epoch_seconds(metrics: Path) -> list[float]:
    return [record["seconds"] for record in read_records(metrics) if record["event"] == "epoch"]


def epoch_end_stalls(metrics: Path) -> list[tuple[float, float]]:
    """Seconds between consecutive epochs' training, validation excluded (see the module's docstring)."""
    windows: dict[int, list[tuple[int, float]]] = {}  # epoch -> [(last batch, time of its first event)]
    first_batch: dict[int, dict] = {}  # epoch -> its first `batch` event
    epoch_started: dict[int, float] = {}
    batch_size = 0
    validation: dict[int, float] = {}  # epoch -> seconds of the validation pass that followed it
    epoch, started = 0, None
    for record in read_records(metrics):
        kind = record["event"]
        if kind == "run_started":
            if epoch:
                break  # a resumed run: only the first fit's epochs are consecutive
            batch_size = record["config"]["batch_size"]
        if kind == "epoch_started":
            epoch = record["epoch"]
            epoch_started[epoch] = record["time"]
        elif kind == "batch":
            first_batch.setdefault(record["epoch"], record)
            found = windows.setdefault(record["epoch"], [])
            if found and record["time"] - found[-1][1] < 0.05:
                found[-1] = (record["batch"], found[-1][1])  # the same window, read back at once
            else:
                found.append((record["batch"], record["time"]))
        elif kind == "evaluation_started" and record["split"] == "val" and epoch not in validation:
            started = record["time"]
        elif kind == "evaluation" and started is not None and not record.get("requested"):
            validation[epoch], started = record["time"] - started, None
    stalls = []
    for current in sorted(windows):
        following = windows.get(current + 1)
        if not following or current not in validation:
            continue
        end = windows[current][-1][1]
        around = _per_batch(windows[current])[-5:] + _per_batch(following)[:5]
        step = statistics.median(around) if around else 0.0
        k, first = following[0]
        opening = first_batch[current + 1]  # the window's seconds are its images over its rate
        wait = opening["data_wait_share"] * k * batch_size / opening["images_per_sec"]
        stall = epoch_started[current + 1] - end - validation[current] + wait
        stalls.append((stall, first - k * step - end - validation[current]))
    return stalls


def _per_batch(windows: list[tuple[int, float]]) -> list[float]:
    return [(t2 - t1) / (k2 - k1) for (k1, t1), (k2, t2) in zip(windows, windows[1:], strict=False) if k2 > k1]


def load() -> str:
    """The machine's load average: other work on it shows in every figure (printed after each run)."""
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def ceiling(args: argparse.Namespace, env: dict[str, str]) -> float:
    """Images/s of the bare training step on a batch in memory (benchmarks/ceiling.py, own process)."""
    command = [sys.executable, str(HERE / "ceiling.py"), "--batch-size", str(args.batch_size), "--device", args.device]
    if args.ceiling_steps:
        command += ["--steps", str(args.ceiling_steps)]
    if args.no_channels_last:
        command += ["--no-channels-last"]
    command += ["--amp", args.amp]
    out, _ = run(command, env)
    return json.loads(out.strip().splitlines()[-1])["images_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="generated images (default 1200: 30 batches)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", help="use this PetImages-shaped folder instead of generating one")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-tui", action="store_true")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--tutorial-epochs", type=int, help="epochs of (a) (default: --epochs)")
    parser.add_argument(
        "--no-channels-last", action="store_true", help="passed to (b), (c) and the ceiling (the default is on)"
    )
    parser.add_argument("--amp", default="auto", help="passed to (b), (c) and the ceiling (default auto, as theirs)")
    parser.add_argument("--ceiling-steps", type=int, help="timed steps of the ceiling (default 20 CPU, 300 CUDA)")
    parser.add_argument("--jobs", type=int, default=1, help="processes generating the images")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2, help="2: (b) and (c) run as b c c b")
    parser.add_argument("--keep", action="store_true", help="keep the runs, caches and generated images")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    try:
        measure(args, work)
    finally:  # each run caches its decoded images: a few GB a benchmark, which would fill /tmp
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(HERE.parent)}
    data = Path(args.data) if args.data else make_pet_images(work / "data", args.images, jobs=args.jobs)
    device = args.device
    tutorial_device = [] if device == "auto" else ["--device", device]
    print(f"data: {data}; batch {args.batch_size}; {args.epochs} epochs; image size 227", flush=True)

    results: list[tuple[str, list[float], float, list[tuple[float, float]]]] = []  # name, img/s, RSS, stalls
    if not args.skip_tutorial:
        out, rss_a = run(
            [
                sys.executable,
                str(HERE / "tutorial_loop.py"),
                "--data",
                str(data),
                "--epochs",
                str(args.tutorial_epochs or args.epochs),
                "--batch-size",
                str(args.batch_size),
                *tutorial_device,
            ],
            env,
        )
        tutorial = [e["images_per_sec"] for e in json.loads(out.strip().splitlines()[-1])["epochs"]]
        results.append(("(a) tutorial loop", tutorial, rss_a, []))
        print(f"(a) done: {' '.join(f'{rate:.1f}' for rate in tutorial)} img/s; {load()}", flush=True)

    common = ["--data", str(data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    common += ["--device", device]  # the default --val-split 0.2: 1200 images train 960, 30 batches
    common += ["--no-channels-last"] if args.no_channels_last else []
    common += ["--amp", args.amp]
    # (b) and (c) in the order b c c b (--rounds 2, the default): a machine that speeds up or slows
    # down during the benchmark (other tenants, clocks) weighs on both alike. Each run has its own
    # image cache, so every epoch 1 decodes the JPEGs as (a)'s does.
    tui = HERE / "tui_driver.py"
    kinds = ["b"] if args.skip_tui else ["b", "c"]
    order = kinds if args.rounds == 1 else kinds + kinds[::-1]
    metrics: dict[str, list[Path]] = {kind: [] for kind in kinds}
    peak: dict[str, float] = dict.fromkeys(kinds, 0.0)
    for index, kind in enumerate(order):
        out = work / f"{kind}{index}"
        command = [sys.executable, "-m", "alexnet_tui", "--no-ui"] if kind == "b" else [sys.executable, str(tui)]
        run_env = {**env, "XDG_CACHE_HOME": str(out) + "-cache"}
        _, rss = run([*command, *common, "--out", str(out)], run_env)
        metrics[kind].append(out / "metrics.jsonl")
        peak[kind] = max(peak[kind], rss)
        rates_text = " ".join(f"{rate:.1f}" for rate in epoch_rates(out / "metrics.jsonl"))
        print(f"({kind}) done: {rates_text} img/s; {load()}", flush=True)
    names = {"b": "(b) alexnet-tui --no-ui", "c": "(c) alexnet-tui TUI"}
    for kind in kinds:
        per_run = [epoch_rates(path) for path in metrics[kind]]
        rates = [statistics.mean(epoch) for epoch in zip(*per_run, strict=True)]
        stalls = [stall for path in metrics[kind] for stall in epoch_end_stalls(path)]
        results.append((names[kind], rates, peak[kind], stalls))
    metrics_b = metrics["b"][0]
    training_seconds_b = [seconds for path in metrics["b"] for seconds in epoch_seconds(path)]
    used = next(record["device"] for record in read_records(metrics_b) if record["event"] == "run_started")
    top = ceiling(args, env)

    print(
        f"\n{'run':<26}"
        + "".join(f"{'epoch ' + str(i + 1) + ' img/s':>16}" for i in range(args.epochs))
        + f"{'peak RSS GiB':>14}  epoch-end stall s (with step)"
    )
    for name, rates, rss, stalls in results:
        stall_text = " ".join(f"{stall:.2f} ({whole:.2f})" for stall, whole in stalls) if stalls else "-"
        print(f"{name:<26}" + "".join(f"{rate:>16.1f}" for rate in rates) + f"{rss:>14.2f}  {stall_text}")
    print(f"{'ceiling (step in memory)':<26}{top:>16.1f}  ({load()} after it)")
    amp = next(record["amp"] for record in read_records(metrics_b) if record["event"] == "run_started")
    seconds_text = " ".join(f"{seconds:.2f}" for seconds in training_seconds_b)
    print(f"\n(b) on {used}, autocast {amp}; training seconds per epoch: {seconds_text}")

    gpu = used.startswith("cuda")
    runs = {name[:3]: (rates, stalls) for name, rates, _, stalls in results}
    checks: list[tuple[str, float, str, bool]] = []  # what, value, target, met
    b_rates, b_stalls = runs["(b)"]
    both = b_stalls + (runs["(c)"][1] if "(c)" in runs else [])
    worst_stall = max((stall for stall, _ in both), default=float("nan"))
    worst_whole = max((whole for _, whole in both), default=float("nan"))
    limit = 0.1 if gpu else 0.3
    if gpu:
        checks.append(("(b) training s per epoch (max)", max(training_seconds_b), "<= 2", max(training_seconds_b) <= 2))
    checks.append(("epoch-end stall s (max)", worst_stall, f"<= {limit}", worst_stall <= limit))
    checks.append(("  the same with step (max)", worst_whole, f"<= {limit}", worst_whole <= limit))
    if "(c)" in runs:
        per_epoch = " ".join(f"{c / b:.2f}" for c, b in zip(runs["(c)"][0], b_rates, strict=False))
        ratio = run_rate(metrics["c"]) / run_rate(metrics["b"])  # every epoch: a single one moves by a few %
        checks.append((f"c/b (whole run; per epoch {per_epoch})", ratio, ">= 0.97", ratio >= 0.97))
    ratio = b_rates[-1] / top
    checks.append(("b/ceiling (last epoch)", ratio, ">= 0.95", ratio >= 0.95))
    later = statistics.mean(b_rates[1:]) / top if len(b_rates) > 1 else ratio
    checks.append(("b/ceiling (mean of epochs 2+)", later, ">= 0.95", later >= 0.95))
    if "(a)" in runs:
        a_rates = runs["(a)"][0]
        checks.append(("b/a (last epoch)", b_rates[-1] / a_rates[-1], "", True))
        checks.append(("b/a (epoch 1)", b_rates[0] / a_rates[0], ">= 1", b_rates[0] >= a_rates[0]))
    print()
    for what, value, target, met in checks:
        verdict = ("met" if met else "MISSED") if target else ""
        print(f"{what:<44}{value:>8.2f}  {target:<8} {verdict}")


if __name__ == "__main__":
    main()
