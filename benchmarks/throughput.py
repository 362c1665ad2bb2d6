"""Side-by-side training throughput: (a) the tutorial's loop, (b) alexnet-tui --no-ui, (c) the TUI.

    python benchmarks/throughput.py                 # 320 PetImages-shaped JPEGs, 2 epochs, on this machine
    python benchmarks/throughput.py --images 20000  # the real dataset's size (on a GPU box)

Same machine, same data folder, same batch size, one run after another. Prints images/s per
epoch for each, the ratios b/a and c/b, and each run's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def make_pet_images(root: Path, count: int, seed: int = 0) -> Path:
    """Cat/ and Dog/ JPEGs of varied sizes around 500x375, smooth enough to compress like photos."""
    rng = np.random.default_rng(seed)
    for name in ("Cat", "Dog"):
        (root / "PetImages" / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = int(rng.integers(300, 501)), int(rng.integers(250, 501))
        small = rng.integers(0, 255, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        noise = rng.normal(0, 8, size=(height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        folder = "Cat" if index % 2 == 0 else "Dog"
        Image.fromarray(pixels).save(root / "PetImages" / folder / f"{index}.jpg", quality=90)
    return root / "PetImages"


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


def epoch_rates(metrics: Path) -> list[float]:
    rates = []
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "epoch":
            rates.append(record["images_per_sec"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320, help="generated images (default 320)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", help="use this PetImages-shaped folder instead of generating one")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-tui", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(HERE.parent)}
    data = Path(args.data) if args.data else make_pet_images(work / "data", args.images)
    device = args.device
    tutorial_device = [] if device == "auto" else ["--device", device]
    print(f"data: {data}; batch {args.batch_size}; {args.epochs} epochs; image size 227", flush=True)

    out, rss_a = run(
        [
            sys.executable,
            str(HERE / "tutorial_loop.py"),
            "--data",
            str(data),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            *tutorial_device,
        ],
        env,
    )
    tutorial = [e["images_per_sec"] for e in json.loads(out.strip().splitlines()[-1])["epochs"]]

    common = [
        "--data",
        str(data),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--device",
        device,
        "--val-split",
        "0.1",
    ]
    _, rss_b = run([sys.executable, "-m", "alexnet_tui", "--no-ui", *common, "--out", str(work / "b")], env)
    headless = epoch_rates(work / "b" / "metrics.jsonl")
    results = [("(a) tutorial loop", tutorial, rss_a), ("(b) alexnet-tui --no-ui", headless, rss_b)]
    if not args.skip_tui:
        _, rss_c = run([sys.executable, str(HERE / "tui_driver.py"), *common, "--out", str(work / "c")], env)
        results.append(("(c) alexnet-tui TUI", epoch_rates(work / "c" / "metrics.jsonl"), rss_c))

    print(
        f"\n{'run':<26}"
        + "".join(f"{'epoch ' + str(i + 1) + ' img/s':>16}" for i in range(args.epochs))
        + f"{'peak RSS GiB':>14}"
    )
    for name, rates, rss in results:
        print(f"{name:<26}" + "".join(f"{rate:>16.1f}" for rate in rates) + f"{rss:>14.2f}")
    last = {name[:3]: rates[-1] for name, rates, _ in results}
    print(f"\nb/a (last epoch, images/s): {last['(b)'] / last['(a)']:.2f}")
    if "(c)" in last:
        print(f"c/b (last epoch, images/s): {last['(c)'] / last['(b)']:.2f}")


if __name__ == "__main__":
    main()
