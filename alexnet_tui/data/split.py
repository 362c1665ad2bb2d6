"""The run's split of its images: seeded, per class, the same for a folder and the demo set."""

from __future__ import annotations

import torch


def split_indices(labels: list[int], val_split: float, test_split: float, seed: int) -> tuple[list[int], ...]:
    """A seeded, per-class split: `val_split` of each class is held out from training and
    `test_split` of the held-out part is kept for the final report, never for model selection."""
    generator = torch.Generator().manual_seed(seed)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for label in sorted(set(labels)):
        members = [i for i, value in enumerate(labels) if value == label]
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        held_out = min(len(order) - 1, max(1, round(len(order) * val_split)))
        tested = round(held_out * test_split) if held_out > 1 else 0
        test += order[:tested]
        val += order[tested:held_out]
        train += order[held_out:]
    return sorted(train), sorted(val), sorted(test)
