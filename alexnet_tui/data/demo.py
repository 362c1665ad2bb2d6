"""A built-in, generated image set: three tinted textures AlexNet tells apart in a few epochs, offline."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

DEMO_CLASSES = ["checks", "spots", "stripes"]


def _coordinates(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid rotated by a random angle, in cycles across the image."""
    angle = rng.uniform(0, np.pi)
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 0..1 mask: checks, spots or stripes at a random scale, angle and phase."""
    u, v = _coordinates(size, rng)
    cycles = rng.uniform(2.0, 5.0)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    if label == 0:
        return ((np.sin(2 * np.pi * cycles * u + phase[0]) * np.sin(2 * np.pi * cycles * v + phase[1])) > 0).astype(
            np.float32
        )
    if label == 1:
        mask = np.zeros((size, size), dtype=np.float32)
        axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
        y, x = np.meshgrid(axis, axis, indexing="ij")
        for _ in range(rng.integers(3, 7)):
            cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.16)
            mask = np.maximum(mask, ((x - cx) ** 2 + (y - cy) ** 2 < radius**2).astype(np.float32))
        return mask
    return (np.sin(2 * np.pi * cycles * u + phase[0]) > 0).astype(np.float32)


# Each class leans to one colour channel, so a first run learns quickly what it is shown; the
# pattern (checks, spots, stripes) tells them apart too, and the colours overlap a little.
CLASS_TINTS = np.array([[0.2, 0.35, 0.9], [0.9, 0.25, 0.2], [0.25, 0.85, 0.3]], dtype=np.float32)


def demo_image(index: int, size: int, seed: int) -> tuple[np.ndarray, int]:
    """Image `index` of the demo set as HxWx3 uint8, with its label; the same for the same inputs."""
    rng = np.random.default_rng([seed, index])
    label = index % len(DEMO_CLASSES)
    mask = _pattern(label, size, rng)[..., None]
    foreground = np.clip(CLASS_TINTS[label] + rng.normal(0, 0.15, size=3), 0, 1).astype(np.float32)
    background = (rng.uniform(0, 0.35) * (1 - foreground) + rng.uniform(0, 0.1, size=3)).astype(np.float32)
    image = background * (1 - mask) + foreground * mask
    image += rng.normal(0, 0.04, size=image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), label


def demo_tensors(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole demo set as (N, 3, S, S) uint8 images and (N,) labels."""
    import torch  # here: a viewer drawing one demo image never loads it

    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    labels = torch.empty(count, dtype=torch.long)
    for index in range(count):
        pixels, label = demo_image(index, size, seed)
        images[index] = torch.from_numpy(pixels).permute(2, 0, 1)
        labels[index] = label
    return images, labels


# What regenerates a demo image a report names. The engine's reports name a demo image by its
# position in the evaluated split ("#33"): the run's seed, set size, image size and split fractions
# turn that back into its pixels.
DEMO_SETTINGS = ("seed", "demo_size", "image_size", "val_split", "test_split")
_REFERENCE = re.compile(r"#(\d+)")


def demo_settings(report: Mapping[str, Any], near: Path | None = None) -> dict[str, Any] | None:
    """The settings that made a report's demo images: the report's own "demo" entry where it has
    one, else the run's config.toml beside the report file (`near`) or beside its checkpoint."""
    if isinstance(report.get("demo"), Mapping):
        return dict(report["demo"])
    folders = [near.parent] if near is not None else []
    if report.get("checkpoint"):
        folders.append(Path(str(report["checkpoint"])).parent)
    for folder in folders:
        try:
            with open(folder / "config.toml", "rb") as file:
                return {key.replace("-", "_"): value for key, value in tomllib.load(file).items()}
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return None


def demo_index(reference: str, split: str, settings: Mapping[str, Any] | None) -> int | None:
    """The demo set's index of the image a report calls `reference` ("#33": the 34th image of the
    run's `split` split); None when it is not such a name or `settings` cannot place it. The split
    is drawn again with torch's generator: reports record the answer, so viewers need not."""
    from alexnet_tui.data.split import split_indices

    found = _REFERENCE.fullmatch(str(reference).strip())
    placed = _placing(settings)
    if found is None or placed is None or split not in ("train", "val", "test"):
        return None
    seed, count, _, val_split, test_split = placed
    labels = [index % len(DEMO_CLASSES) for index in range(count)]  # as demo_image labels them
    parts = dict(zip(("train", "val", "test"), split_indices(labels, val_split, test_split, seed), strict=True))
    position = int(found.group(1))
    return parts[split][position] if position < len(parts[split]) else None


def demo_picture(reference: str, split: str, settings: Mapping[str, Any] | None, index: Any = None) -> PILImage | None:
    """The generated image a report calls `reference` in `split`, as the model saw it: by the demo
    set's `index` where the report recorded it (no torch needed), else placed by demo_index."""
    from PIL import Image

    placed = _placing(settings)
    if placed is None:
        return None
    seed, count, size, _, _ = placed
    if not (isinstance(index, int) and not isinstance(index, bool)):
        index = demo_index(reference, split, settings)
    if index is None or not 0 <= index < count:
        return None
    pixels, _ = demo_image(index, size, seed)
    return Image.fromarray(pixels)


def _placing(settings: Mapping[str, Any] | None) -> tuple[int, int, int, float, float] | None:
    """Seed, set size, image size and split fractions from a run's settings; None if unusable."""
    from alexnet_tui.config import DEMO_IMAGE_SIZE

    if settings is None:
        return None
    try:
        seed, count = int(settings.get("seed", 42)), int(settings.get("demo_size", 600))
        size = int(settings.get("image_size") or DEMO_IMAGE_SIZE)
        val_split, test_split = float(settings.get("val_split", 0.2)), float(settings.get("test_split", 0.5))
    except (TypeError, ValueError):
        return None
    if count <= 0 or size <= 0:
        return None
    return seed, count, size, val_split, test_split
