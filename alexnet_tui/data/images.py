"""Datasets that yield uint8 CHW images at the tutorial's geometry, decoded once into a cache.

Only geometry happens here (Resize/CenterCrop, as in the tutorial); the random flip and the
normalisation are tensor ops the engine does on the device, so a cached image is reusable.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from alexnet_tui.paths import cache_dir

UNREADABLE = -100  # CrossEntropyLoss's ignore_index: an image that broke after the scan counts for nothing


def train_resize(image_size: int) -> int:
    """The tutorial resizes to 256 before a 227 centre crop; keep that ratio at other sizes."""
    return round(image_size * 256 / 227)


def load_resized(path: str | Path, image_size: int, variant: str) -> torch.Tensor:
    """Decode to RGB and apply the tutorial's geometry: train Resize(256)+CenterCrop(227), eval Resize(227)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    if variant == "train":
        side = train_resize(image_size)
        rgb = F.center_crop(F.resize(rgb, [side, side]), [image_size, image_size])
    else:
        rgb = F.resize(rgb, [image_size, image_size])
    return F.pil_to_tensor(rgb)


class TensorImages(Dataset):
    """Images already in memory (the demo set)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class FolderImages(Dataset):
    """Files on disk, each decoded and resized once into a uint8 cache (a memory-mapped file or RAM)."""

    def __init__(
        self,
        root: Path,
        samples: list[tuple[str, int]],
        image_size: int,
        variant: str,
        cache_file: Path | None = None,
    ) -> None:
        self.root, self.samples, self.image_size, self.variant = root, samples, image_size, variant
        self.cache_file = cache_file
        self._pixels: np.ndarray | None = None
        self._filled: np.ndarray | None = None
        if cache_file is not None:
            self._create_cache_files()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def _shape(self) -> tuple[int, int, int, int]:
        return (len(self.samples), 3, self.image_size, self.image_size)

    def _create_cache_files(self) -> None:
        assert self.cache_file is not None
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        flags = self.cache_file.with_suffix(".filled")
        if not self.cache_file.exists() or not flags.exists():
            # Sparse files: the cache costs disk only as images are decoded into it.
            np.memmap(self.cache_file, dtype=np.uint8, mode="w+", shape=self._shape).flush()
            np.memmap(flags, dtype=np.uint8, mode="w+", shape=(len(self.samples),)).flush()

    def _open_cache(self) -> None:
        assert self.cache_file is not None
        self._pixels = np.memmap(self.cache_file, dtype=np.uint8, mode="r+", shape=self._shape)
        self._filled = np.memmap(self.cache_file.with_suffix(".filled"), dtype=np.uint8, mode="r+", shape=(len(self),))

    def __getstate__(self) -> dict:
        # DataLoader workers reopen the memory map themselves rather than pickling it.
        state = self.__dict__.copy()
        state["_pixels"] = state["_filled"] = None
        return state

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        relative, label = self.samples[index]
        if self.cache_file is not None and self._pixels is None:
            self._open_cache()
        if self._filled is not None and self._filled[index]:
            return torch.from_numpy(np.array(self._pixels[index])), label
        try:
            pixels = load_resized(self.root / relative, self.image_size, self.variant)
        except (OSError, ValueError, Image.DecompressionBombError):
            return torch.zeros(self._shape[1:], dtype=torch.uint8), UNREADABLE
        if self._filled is not None:
            self._pixels[index] = pixels.numpy()
            self._filled[index] = 1  # set after the pixels, so a crash in between only costs a re-decode
        return pixels, label


def cache_path(fingerprint: str, split: str, variant: str, image_size: int) -> Path:
    return cache_dir() / "images" / f"{fingerprint}-{split}-{variant}-{image_size}.u8"
