"""One optimizer step of a prepared run: the tutorial's flips (and --augment's crops), seeded per
batch so that a resumed run sees the batches an uninterrupted one would."""

from __future__ import annotations

import torch

from alexnet_tui.data.images import UNREADABLE
from alexnet_tui.engine.augment import augmented_input
from alexnet_tui.engine.distributed import all_reduce_sum
from alexnet_tui.engine.prepared import PreparedRun
from alexnet_tui.engine.tensors import to_model_input


def batch_seed(run: PreparedRun, epoch: int, batch: int) -> int:
    return run.config.seed * 1_000_003 + epoch * 10_007 + batch + run.ranks.rank * 7_919


def train_input(run: PreparedRun, images: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
    """The tutorial's flips; with --augment, random resized crops too (seeded per batch as the flips)."""
    seed = batch_seed(run, epoch, batch)
    flips = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < 0.5
    if not run.config.augment:
        return to_model_input(images, run.device, flips, run.memory_format)
    # Another stream than the flips' (an LCG step of their seed), as reproducible on resume.
    seed = (seed * 6_364_136_223_846_793_005 + 1) % 2**63
    return augmented_input(images, run.device, flips, run.config.image_size, seed, run.memory_format)


def train_step(run: PreparedRun, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
    """One optimizer step; returns [mean loss, hits, readable images, images] still on the device
    (the whole job's figures under DDP)."""
    inputs = train_input(run, images, epoch, batch)
    targets = labels.to(run.device, non_blocking=True)
    with run.autocast():
        logits = run.train_model(inputs)
        readable = (targets != UNREADABLE).sum()
        loss = run.criterion(logits.float(), targets) / readable.clamp(min=1)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    hits = (logits.argmax(1) == targets).sum()
    images_in_batch = torch.tensor(float(len(labels)), device=run.device)
    stats = torch.stack([loss.detach().float(), hits.float(), readable.float(), images_in_batch])
    if run.ranks.distributed:
        # The whole job's figures, not one rank's: sum loss*count, hits and counts over ranks.
        totals = all_reduce_sum(torch.stack([stats[0] * stats[2], stats[1], stats[2], stats[3]]))
        stats = torch.stack([totals[0] / totals[2].clamp(min=1), totals[1], totals[2], totals[3]])
    return stats
