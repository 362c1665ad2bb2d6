"""uint8 images -> the model's input: the tutorial's flip, ToTensor and Normalize as device tensor ops."""

from __future__ import annotations

from functools import cache

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@cache
def _scaled_mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: a host-to-device copy per batch could stall the CUDA stream."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def to_model_input(
    images: torch.Tensor,
    device: torch.device,
    flips: torch.Tensor | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """(N, 3, H, W) uint8 on the host -> normalised float on the device, flipped where `flips` is True."""
    images = images.to(device, non_blocking=True)
    mean, std = _scaled_mean_std(device)
    images = (images.float() - mean) / std
    if flips is not None:
        flips = flips.to(device, non_blocking=True).view(-1, 1, 1, 1)
        images = torch.where(flips, images.flip(3), images)
    return images.contiguous(memory_format=memory_format)
