"""The evaluation pass that picks the checkpoint: summed loss, hits and images, kept on the device."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

import torch
from torch import nn

from alexnet_tui.data.images import UNREADABLE


def mirrored_log_probabilities(logits: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the log of the mean of the softmax of an image and of its mirror image."""
    probabilities = (logits.float().softmax(1) + mirrored.float().softmax(1)) / 2
    return probabilities.clamp_min(1e-12).log()


@torch.inference_mode()
def loss_and_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    limit: int,
    criterion: nn.Module,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager],
    should_stop: Callable[[], bool],
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    tta: bool = False,
) -> torch.Tensor | None:
    """[loss sum, hits, readable images] over at most `limit` batches, on the model's device
    (read back once by the caller); None if a stop request cut the pass short. With `tta` each
    image's probabilities are averaged with its mirror image's, and the loss is that average's."""
    was_training = model.training
    model.eval()
    sums: torch.Tensor | None = None
    try:
        for index, (images, labels) in enumerate(batches):
            if index >= limit:
                break
            if should_stop():
                return None
            inputs = to_input(images)
            targets = labels.to(inputs.device, non_blocking=True)
            with autocast():
                logits = model(inputs)
                mirrored = model(inputs.flip(3)) if tta else None
            if mirrored is None:
                loss = criterion(logits.float(), targets)
            else:
                logits = mirrored_log_probabilities(logits, mirrored)
                loss = nn.functional.nll_loss(logits, targets, reduction="sum", ignore_index=UNREADABLE)
            batch = torch.stack(
                [
                    loss,
                    (logits.argmax(1) == targets).sum().float(),
                    (targets != UNREADABLE).sum().float(),
                ]
            )
            sums = batch if sums is None else sums + batch
            on_progress(index + 1, limit)
    finally:
        model.train(was_training)
    device = next(model.parameters()).device
    return sums if sums is not None else torch.zeros(3, device=device)
