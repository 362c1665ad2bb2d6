"""A built-in, generated image set: three tinted textures AlexNet tells apart in a few epochs, offline."""

from __future__ import annotations

import numpy as np
import torch

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
    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    labels = torch.empty(count, dtype=torch.long)
    for index in range(count):
        pixels, label = demo_image(index, size, seed)
        images[index] = torch.from_numpy(pixels).permute(2, 0, 1)
        labels[index] = label
    return images, labels
