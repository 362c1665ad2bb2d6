"""Shared fixtures: a private cache folder per test, tiny configs and a PetImages-shaped folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_tui.config import TrainConfig

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


# The one definition of the test data and model sizes. A sixteenth of the tutorial's widths trains
# in well under a second here and writes checkpoints of ~3 MB instead of ~700 MB; the real network
# is kept for the tests where it matters (summary, channels_last at 227, one full-size fit).
TINY_WIDTH = 1 / 16
TINY = dict(data="demo", image_size=67, epochs=2, demo_size=48, batch_size=8, workers=0, width=TINY_WIDTH)
TINY_ARGS = [
    "--data", "demo", "--image-size", "67", "--demo-size", "48", "--batch-size", "8", "--workers", "0",
    "--width", str(TINY_WIDTH),
]  # fmt: skip


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    """Small enough to train in about a second on two CPU cores."""
    return TrainConfig(**{**TINY, "out": str(tmp_path / "run"), **overrides})


@pytest.fixture
def per_batch_reports(monkeypatch):
    """The engine reads metrics back every 0.1 s; the tiny model runs a whole epoch in less. Tests
    that act on one batch's event ask for an event after every batch."""
    monkeypatch.setattr("alexnet_tui.engine.trainer.REPORT_INTERVAL_S", 0.0)


@pytest.fixture
def val_loss_never_improves(monkeypatch):
    """Validation reports val_loss 1, 2, 3... (epoch 1 alone is a best): for --patience."""
    from alexnet_tui.engine import trainer

    evaluate = trainer.evaluate

    def never_better(run, split, emit, stop_now, **kwargs):
        result = evaluate(run, split, emit, stop_now, **kwargs)
        return None if result is None else (float(run.progress.epoch), result[1])

    monkeypatch.setattr(trainer, "evaluate", never_better)


def stop_at(epoch: int, batch: int, control, seen: list) -> Callable:
    """A subscriber keeping every event in `seen` and asking `control` to stop after that batch."""

    def subscriber(event) -> None:
        seen.append(event)
        if type(event).__name__ == "BatchEnd" and (event.epoch, event.batch) == (epoch, batch):
            control.request_stop()

    return subscriber


def run_cli(*args: str, cwd: Path, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    """The real command in a process of its own: only for what needs one (signals, imports)."""
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tui", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **options,
    )


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One finished two-epoch run, shared by the tests that only read one (runs, watch, evaluate)."""
    from alexnet_tui.cli import main

    folder = tmp_path_factory.mktemp("shared-runs")
    cache = tmp_path_factory.mktemp("shared-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        assert main(["--no-ui", *TINY_ARGS, "--epochs", "2", "--out", str(folder / "first")]) == 0
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous
    return folder / "first"


def jpeg_bytes(width: int, height: int, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode != "RGBA" else "PNG")
    return buffer.getvalue()


def make_pet_images(root: Path, per_class: int = 6) -> dict[str, int]:
    """A PetImages/ tree with the real download's pathologies. Returns how many files are bad."""
    pets = root / "PetImages"
    for label, name in enumerate(["Cat", "Dog"]):
        folder = pets / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            (folder / f"{index}.jpg").write_bytes(jpeg_bytes(50 + 7 * index, 40 + 5 * index, seed=label * 100 + index))
        (folder / "Thumbs.db").write_bytes(b"\x00\x01not an image")
        (folder / "666.jpg").write_bytes(b"")  # zero bytes, as Cat/666.jpg in the real zip
        whole = jpeg_bytes(64, 64, seed=999 + label)
        (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    cat = pets / "Cat"
    (cat / "cmyk.jpg").write_bytes(jpeg_bytes(40, 30, seed=7, mode="CMYK"))
    (cat / "gray.jpg").write_bytes(jpeg_bytes(40, 30, seed=8, mode="L"))
    (cat / "png-named.jpg").write_bytes(jpeg_bytes(40, 30, seed=9, mode="RGBA"))  # PNG data, .jpg name
    (root / "readme.txt").write_text("not a class")
    return {"bad": 6, "good": 2 * per_class + 3}


@pytest.fixture
def pet_folder(tmp_path: Path) -> Path:
    root = tmp_path / "download"
    make_pet_images(root)
    return root


@pytest.fixture
def tmpfs(tmp_path):
    """A small filesystem of its own (root mounts it; CI runs as root), full or read-only as asked."""
    import subprocess

    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "--lazy", str(point)], check=False)
