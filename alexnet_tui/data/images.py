"""Datasets that yield uint8 CHW images at the tutorial's geometry, decoded once into a cache.

Only geometry happens here (Resize/CenterCrop, as in the tutorial); the random flip and the
normalisation are tensor ops the engine does on the device, so a cached image is reusable.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from alexnet_tui.data.scan import open_image_file
from alexnet_tui.errors import UsageError
from alexnet_tui.paths import cache_dir

try:
    import fcntl
except ImportError:  # Windows has no flock; there two runs filling one slot at once may interleave
    fcntl = None

UNREADABLE = -100  # CrossEntropyLoss's ignore_index: an image that broke after the scan counts for nothing


def train_resize(image_size: int) -> int:
    """The tutorial resizes to 256 before a 227 centre crop; keep that ratio at other sizes."""
    return round(image_size * 256 / 227)


def imagenet_resize(image_size: int) -> int:
    """The ImageNet weights' transforms resize the shorter side to 256 before a 224 centre crop."""
    return round(image_size * 256 / 224)


def augment_side(image_size: int, pretrained: bool) -> int:
    """--augment caches the training images larger (256 for 227 or 224) and crops on the device."""
    return imagenet_resize(image_size) if pretrained else train_resize(image_size)


def eval_variant(pretrained: bool) -> str:
    """The geometry of validation, test and predicted images: the ImageNet weights' own, or the tutorial's."""
    return "imagenet" if pretrained else "eval"


def split_variants(image_size: int, pretrained: bool, augment: bool) -> tuple[str, int, str]:
    """(training geometry, side the training images are stored at, evaluation geometry) for a run."""
    if augment:
        train = "augment-imagenet" if pretrained else "augment"
        return train, augment_side(image_size, pretrained), eval_variant(pretrained)
    return "imagenet" if pretrained else "train", image_size, eval_variant(pretrained)


def open_rgb(source: str | Path | BinaryIO, upright: bool = False) -> Image.Image:
    """The decoded picture in RGB. upright: turned the way a viewer shows it, by its EXIF orientation
    (a phone's photo is stored sideways; a broken EXIF block leaves the pixels as stored)."""
    if isinstance(source, str | Path):
        with open_image_file(source) as handle:
            return open_rgb(handle, upright)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(source) as image:
            if upright:
                try:
                    return ImageOps.exif_transpose(image).convert("RGB")
                except Exception:  # noqa: BLE001 - Pillow raises several kinds on malformed EXIF
                    pass
            return image.convert("RGB")


def load_resized(source: str | Path | BinaryIO, image_size: int, variant: str, upright: bool = False) -> torch.Tensor:
    """Decode to RGB and apply a geometry; `image_size` is the side of the result.
    train: the tutorial's Resize(256)+CenterCrop(227); eval: its Resize(227); imagenet: the ImageNet
    weights' own (shorter side to 256, centre crop 224), for training and evaluation alike;
    augment / augment-imagenet: the training image before the crop, as a square (tutorial: Resize to
    the side; imagenet: shorter side, centre crop), for random resized crops on the device.
    upright: apply the EXIF orientation first (predict: users' photos; the data is read as the
    tutorial's ImageFolder reads it, as stored)."""
    rgb = open_rgb(source, upright)
    if variant == "train":
        side = train_resize(image_size)
        rgb = F.center_crop(F.resize(rgb, [side, side]), [image_size, image_size])
    elif variant == "imagenet":
        rgb = F.center_crop(F.resize(rgb, [imagenet_resize(image_size)]), [image_size, image_size])
    elif variant == "augment-imagenet":
        rgb = F.center_crop(F.resize(rgb, [image_size]), [image_size, image_size])
    else:  # eval, augment
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


# The cache file: a header, then per sample an (identity, key) pair of uint64, then the uint8 pixels.
# Keys and pixels share one file so they can never come from two different generations of the cache.
_MAGIC = b"AXTUIMG2"
_HEADER = struct.Struct("<8sQQQ")  # magic, sample count, image size, hash of the variant
_EMPTY = 0  # the key of a slot nothing has been written to; _hash64 never returns it


def _hash64(*parts: object) -> int:
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def _version(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What changes with a file's content. Size and mtime alone miss a re-extracted archive (unzip,
    `cp -p` and rsync keep both); a rewritten or replaced file always gets a new ctime, and usually a new inode."""
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def _entry_key(identity: int, stat: os.stat_result) -> int:
    return _hash64(identity, *_version(stat))


def _decode(path: Path, image_size: int, variant: str) -> tuple[torch.Tensor, os.stat_result]:
    """The pixels and the stat of the very file they came from, taken before decoding: if the file is
    rewritten meanwhile, its stat moves on and the entry written from it will not match again."""
    with open_image_file(path) as handle:
        info = os.fstat(handle.fileno())
        return load_resized(handle, image_size, variant), info


def _matches(path: Path, header: bytes, size: int) -> bool:
    with open(path, "rb") as handle:
        return os.fstat(handle.fileno()).st_size == size and handle.read(len(header)) == header


def _install(path: Path, header: bytes, size: int) -> None:
    """Put a fresh cache file at `path` unless a usable one is there, never truncating one in use:
    the new file is built aside and linked in whole, so another run sees either nothing or all of it."""
    try:
        if _matches(path, header, size):
            return
        stale = True  # another geometry or an older format
    except FileNotFoundError:
        stale = False
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "xb") as fresh:
            fresh.write(header)
            fresh.truncate(size)
            reserve(fresh.fileno(), size, path)
        if stale:
            os.replace(temp, path)  # a run still mapping the old file keeps it, whole, until it closes it
        else:
            with suppress(FileExistsError):  # another run created it first; theirs is as good as ours
                os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def reserve(descriptor: int, size: int, path: Path) -> None:
    """The disk blocks of the whole cache file, taken before it is mapped: a page of a sparse map that
    a full disk cannot back is SIGBUS (exit 135 and not a word; in a loader worker, torch says
    "insufficient shared memory"). A filesystem that cannot reserve is left sparse."""
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                f"the image cache needs {size / 2**20:,.1f} MiB in {path.parent} and that disk is full: "
                "free space there, set XDG_CACHE_HOME to a larger disk, or pass --cache off"
            ) from None
        raise


class CacheError(UsageError):
    """The image cache cannot be made or kept: said in one line, with what to do."""


class ImageCache:
    """Decoded images of one split in a memory-mapped file shared by every run and loader worker.

    Each slot keeps a key hashing the file's path, stat and the geometry; it is served only while the file
    still has that stat, so a replaced image, another dataset at the same path or another size is decoded
    again instead of being served stale.
    """

    def __init__(self, handle: BinaryIO, count: int, image_size: int) -> None:
        self._handle = handle
        self._slots = np.memmap(handle, dtype="<u8", mode="r+", offset=_HEADER.size, shape=(count, 2))
        shape = (count, 3, image_size, image_size)
        self._pixels = np.memmap(handle, dtype=np.uint8, mode="r+", offset=_HEADER.size + 16 * count, shape=shape)

    @classmethod
    def open(cls, path: Path, count: int, image_size: int, variant: str) -> ImageCache | None:
        """None if runs with other geometries keep replacing the file: then this one just decodes."""
        header = _HEADER.pack(_MAGIC, count, image_size, _hash64(variant))
        size = _HEADER.size + count * (16 + 3 * image_size * image_size)
        try:
            for _ in range(3):
                _install(path, header, size)
                handle = open(path, "r+b")
                # Check what was opened, not what was installed: another run may have swapped it in between.
                if os.fstat(handle.fileno()).st_size == size and handle.read(len(header)) == header:
                    try:
                        reserve(handle.fileno(), size, path)  # a file an older version left sparse
                    except BaseException:
                        handle.close()
                        raise
                    return cls(handle, count, image_size)
                handle.close()
        except CacheError:
            raise
        except OSError as error:
            raise CacheError(
                f"cannot write the image cache in {path.parent} ({error.strerror}): "
                "set XDG_CACHE_HOME to a folder you may write, or pass --cache off"
            ) from None
        return None

    def read(self, index: int, identity: int, key: int | None) -> np.ndarray | None:
        """The cached pixels if the slot holds this key, or (key None: the file is gone) any entry of this file."""
        stored = int(self._slots[index, 1])
        if stored == _EMPTY or int(self._slots[index, 0]) != identity or (key is not None and stored != key):
            return None
        pixels = np.array(self._pixels[index])
        # A writer empties the key before touching the pixels, so an unchanged key means the copy is whole.
        return pixels if int(self._slots[index, 1]) == stored else None

    def write(self, index: int, identity: int, key: int, pixels: np.ndarray) -> None:
        with self._locked():
            self._slots[index, 1] = _EMPTY
            self._slots[index, 0] = identity
            self._pixels[index] = pixels
            self._slots[index, 1] = key  # last: a crash before this only costs a re-decode

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Readers need no lock, but two runs writing different versions of one slot must not interleave.
        if fcntl is None:
            yield
            return
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)


class FolderImages(Dataset):
    """Files on disk, each decoded and resized once into a shared uint8 cache file (or at every read, with none)."""

    def __init__(
        self,
        root: Path,
        samples: list[tuple[str, int]],
        image_size: int,
        variant: str,
        cache_file: Path | None = None,
    ) -> None:
        self.root, self.samples, self.image_size, self.variant = root, samples, image_size, variant
        self.cache_file = cache_file if samples else None  # nothing to cache, and numpy cannot map 0 bytes
        self._cache: ImageCache | None = None
        self._open_cache()  # here rather than at the first item, so a cache folder we cannot write fails early

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def _shape(self) -> tuple[int, int, int, int]:
        return (len(self.samples), 3, self.image_size, self.image_size)

    def _open_cache(self) -> None:
        if self.cache_file is not None:
            self._cache = ImageCache.open(self.cache_file, len(self.samples), self.image_size, self.variant)

    def __getstate__(self) -> dict:
        # DataLoader workers reopen the memory map themselves rather than pickling it.
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open_cache()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        relative, label = self.samples[index]
        path = self.root / relative
        identity = _hash64(path, self.image_size, self.variant)
        if self._cache is not None:
            try:
                key = _entry_key(identity, os.stat(path))
            except OSError:
                key = None  # gone since the scan: its last decode is all there is
            cached = self._cache.read(index, identity, key)
            if cached is not None:
                return torch.from_numpy(cached), label
        try:
            pixels, stat = _decode(path, self.image_size, self.variant)
        except (OSError, ValueError, Image.DecompressionBombError):
            return torch.zeros(self._shape[1:], dtype=torch.uint8), UNREADABLE
        if self._cache is not None:
            self._cache.write(index, identity, _entry_key(identity, stat), pixels.numpy())
        return pixels, label


def cache_path(fingerprint: str, split: str, variant: str, image_size: int) -> Path:
    # ".img": files of the older layout (a .u8 with a separate .filled) are never opened by mistake.
    return cache_dir() / "images" / f"{fingerprint}-{split}-{variant}-{image_size}.img"
