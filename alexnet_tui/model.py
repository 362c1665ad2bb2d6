"""The reference tutorial's AlexNet, layer for layer, and its torchsummary table."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

TUTORIAL_IMAGE_SIZE = 227
ARCHITECTURE = "alexnet-2012-tutorial"


ARCHS = ("tutorial", "torchvision")  # --arch: the tutorial's network, or torchvision.models.alexnet
DEFAULT_IMAGE_SIZE = {"tutorial": TUTORIAL_IMAGE_SIZE, "torchvision": 224}


def _pooled_side(image_size: int, arch: str = "tutorial") -> int:
    """Side of the last feature map for a square input (conv1 11/4, three 3/2 max-pools;
    torchvision's conv1 pads by 2)."""
    side = (image_size + (4 if arch == "torchvision" else 0) - 11) // 4 + 1
    for _ in range(3):
        side = (side - 3) // 2 + 1
    return side


def smallest_image_size(arch: str = "tutorial") -> int:
    size = 11
    while _pooled_side(size, arch) < 1:
        size += 1
    return size


def scaled(channels: int, width: float) -> int:
    """A layer's size at a fraction of the tutorial's width (never below one unit)."""
    return max(1, round(channels * width))


class AlexNet(nn.Module):
    """AlexNet as the tutorial wrote it; at 227x227 nothing is added, elsewhere the
    features are pooled adaptively to 6x6 so the classifier stays 9216 -> 4096.
    `width` < 1 scales every layer's channels and units down, for quick tries and tests;
    1 (the default) is the tutorial's network."""

    arch = "tutorial"

    def __init__(self, num_classes: int, image_size: int = TUTORIAL_IMAGE_SIZE, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.image_size = image_size
        self.width = width
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (96, 256, 384, 384, 256))
        hidden = scaled(4096, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, c1, kernel_size=11, stride=4),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        ]
        if _pooled_side(image_size) != 6:
            layers.append(nn.AdaptiveAvgPool2d((6, 6)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # flatten, not view: a channels_last feature map is not contiguous in NCHW order.
        return self.classifier(torch.flatten(self.features(images), 1))


def build_model(arch: str, num_classes: int, image_size: int | None = None, width: float = 1.0) -> nn.Module:
    """The network for --arch: the tutorial's AlexNet, or torchvision.models.alexnet (64-192-384-256-256
    filters, 61.1M parameters at 1000 classes) with `num_classes` outputs. Both carry arch, num_classes,
    image_size and width, which checkpoints and the summary read; `width` applies to the tutorial's only."""
    image_size = image_size or DEFAULT_IMAGE_SIZE[arch]
    if arch == "tutorial":
        return AlexNet(num_classes, image_size, width)
    if arch != "torchvision":
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    if width != 1:
        raise ValueError("--width applies to the tutorial's network only")
    from torchvision.models import alexnet

    model = alexnet(weights=None, num_classes=num_classes)
    model.arch, model.num_classes, model.image_size, model.width = arch, num_classes, image_size, 1.0
    return model


def summary_text(model: nn.Module, device: torch.device | str = "cpu") -> str:
    """torchsummary's table as a string, computed without touching the model's state."""
    from torchsummary import summary

    device = torch.device(device)
    was_training = model.training
    moved = next(model.parameters()).device != device
    original_device = next(model.parameters()).device
    if moved:
        model.to(device)
    buffer = io.StringIO()
    # torchsummary only prints, knows only "cuda" (the current device) and "cpu",
    # and runs a forward pass: keep it out of autograd and out of dropout.
    cuda_context = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        model.eval()
        with torch.no_grad(), cuda_context, contextlib.redirect_stdout(buffer):
            summary(model, (3, model.image_size, model.image_size), device=device.type)
    finally:
        model.train(was_training)
        if moved:
            model.to(original_device)
    return buffer.getvalue()
