"""Shared fixtures: a private cache folder per test, tiny configs and a PetImages-shaped folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_tui.config import TrainConfig


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    """Small enough to train in seconds on two CPU cores."""
    values = dict(
        data="demo", image_size=67, epochs=2, demo_size=48, batch_size=8, out=str(tmp_path / "run"), workers=0
    )
    values.update(overrides)
    return TrainConfig(**values)


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
