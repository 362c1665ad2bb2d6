"""--augment: random resized crops and horizontal flips as tensor ops on the device.

The training split is cached as uint8 at a larger side (data/images.py `augment_side`), so the same
cached image serves every epoch; each batch's crops are drawn on the CPU from a generator seeded by
the run's seed, the epoch and the batch (as the tutorial's flips are), so a resumed run crops as an
uninterrupted one did, and cut out and resized in one `grid_sample` on the device.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from alexnet_tui.engine.tensors import _scaled_mean_std

# Of the cached image's area. torchvision's default, 0.08..1, is for ImageNet's 1000 classes and long
# schedules; fastai's 0.35 suits short runs on small sets, and keeps objects in training crops closer
# to their size in the whole test image (1.26x on average, against 1.33x at 0.25).
SCALE = (0.35, 1.0)
RATIO = (3 / 4, 4 / 3)  # width / height of the crop


def crop_boxes(count: int, seed: int) -> torch.Tensor:
    """(count, 4): width and height as fractions of the side, and the centre in [-1, 1] coordinates."""
    generator = torch.Generator().manual_seed(seed)
    area = torch.empty(count).uniform_(*SCALE, generator=generator)
    ratio = torch.empty(count).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=generator).exp()
    width = (area * ratio).sqrt().clamp(max=1.0)
    height = (area / ratio).sqrt().clamp(max=1.0)
    centre_x = (torch.rand(count, generator=generator) * 2 - 1) * (1 - width)  # the box stays inside the image
    centre_y = (torch.rand(count, generator=generator) * 2 - 1) * (1 - height)
    return torch.stack([width, height, centre_x, centre_y], 1)


def augmented_input(
    images: torch.Tensor,
    device: torch.device,
    flips: torch.Tensor,
    size: int,
    seed: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """(N, 3, S, S) uint8 on the host -> (N, 3, size, size) normalised float on the device: a random
    resized crop of each image (bilinear), mirrored where `flips` is True."""
    boxes = crop_boxes(len(images), seed)
    theta = torch.zeros(len(images), 2, 3)
    theta[:, 0, 0] = boxes[:, 0] * torch.where(flips, -1.0, 1.0)  # a negative x scale mirrors the crop
    theta[:, 0, 2] = boxes[:, 2]
    theta[:, 1, 1] = boxes[:, 1]
    theta[:, 1, 2] = boxes[:, 3]
    pixels = images.to(device, non_blocking=True).float()
    grid = F.affine_grid(theta.to(device, non_blocking=True), [len(images), 3, size, size], align_corners=False)
    cropped = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean, std = _scaled_mean_std(device)  # made once per device: no host-to-device copy per batch
    return ((cropped - mean) / std).contiguous(memory_format=memory_format)
