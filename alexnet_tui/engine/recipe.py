"""The recipe beyond the tutorial's: optimizer (Adam or AdamW), frozen features, the learning rate
schedule per batch, label smoothing and early stopping. Every default is the tutorial's recipe."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.images import UNREADABLE

ONECYCLE_DIV = 25.0  # as torch's OneCycleLR: start at lr/25 ...
ONECYCLE_FINAL_DIV = 1e4  # ... and end at lr/25/1e4


def freeze(model: nn.Module, what: str) -> int:
    """--freeze features: no gradients for the convolutions. Returns the parameters left trainable."""
    if what == "features":
        for parameter in model.features.parameters():
            parameter.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def start_from(model: nn.Module, imagenet: dict[str, torch.Tensor] | None, what: str) -> list[str]:
    """Load the ImageNet weights (all but the head) and freeze what --freeze says; returns what to say."""
    said = []
    if imagenet is not None:
        from alexnet_tui.engine.pretrained import HEAD, load_pretrained

        load_pretrained(model, imagenet)
        said.append(f"started from ImageNet weights; {HEAD} replaced: 4096 -> {model.num_classes} classes")
    if what != "none":
        trainable = freeze(model, what)
        total = sum(p.numel() for p in model.parameters())
        said.append(f"--freeze {what}: training {trainable:,} of {total:,} parameters")
    return said


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The tutorial's Adam over every parameter; with --weight-decay, AdamW, decaying weights but not biases.
    Only trainable parameters are given to it (--freeze). Fused: one kernel for all of them."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.weight_decay <= 0:
        return torch.optim.Adam(trainable, lr=config.lr, fused=True)
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, fused=True)


def training_criterion(config: TrainConfig) -> nn.Module:
    """Summed cross-entropy (divided by the readable images in the step), smoothed with --label-smoothing.
    Validation and test losses never are: they stay comparable between recipes."""
    return nn.CrossEntropyLoss(reduction="sum", ignore_index=UNREADABLE, label_smoothing=config.label_smoothing)


def _cosine(start: float, end: float, fraction: float) -> float:
    """From start (fraction 0) to end (fraction 1) along half a cosine, as torch's schedulers anneal."""
    return end + (start - end) * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0))) / 2


def scheduled_lr(kind: str, base_lr: float, step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total_steps`. A pure function of the
    position, so a resumed run (the step is kept in last.pt) gets exactly the rates an uninterrupted one did.

    cosine: linear warm-up (base_lr/(W+1), 2*base_lr/(W+1), ...), base_lr at step W, then half a cosine
    down towards 0 (never 0 at a step that is taken).
    onecycle: torch's OneCycleLR shape (cosine up from base_lr/25 over the warm-up, cosine down to
    base_lr/25/1e4 at the end), without its momentum cycling."""
    if kind == "none":
        return base_lr
    after = max(1, total_steps - warmup_steps)
    if kind == "cosine":
        if step < warmup_steps:
            return base_lr * (step + 1) / (warmup_steps + 1)
        return _cosine(base_lr, 0.0, (step - warmup_steps) / after)
    if kind == "onecycle":
        start = base_lr / ONECYCLE_DIV
        if step < warmup_steps:
            return _cosine(start, base_lr, step / warmup_steps)
        return _cosine(base_lr, start / ONECYCLE_FINAL_DIV, (step - warmup_steps) / (after - 1 or 1))
    raise ValueError(f"unknown schedule {kind!r}")


@dataclass
class LearningRate:
    """Sets the rate of every parameter group before each optimizer step (per batch, never per epoch)."""

    kind: str
    base_lr: float
    batches_per_epoch: int
    epochs: int
    warmup_epochs: float

    @classmethod
    def for_run(cls, config: TrainConfig, batches_per_epoch: int) -> LearningRate:
        return cls(config.schedule, config.lr, batches_per_epoch, config.epochs, config.warmup_epochs)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.batches_per_epoch

    @property
    def warmup_steps(self) -> int:
        if self.kind == "none":
            return 0
        return min(round(self.warmup_epochs * self.batches_per_epoch), self.total_steps - 1)

    def at(self, step: int) -> float:
        return scheduled_lr(self.kind, self.base_lr, step, self.total_steps, self.warmup_steps)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the rate of `step` on the optimizer; returns it (BatchEnd.lr)."""
        lr = self.at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step_at(self, epoch: int, batch: int) -> int:
        """The step of a position, for a last.pt from before the step was kept."""
        return (epoch - 1) * self.batches_per_epoch + batch


def patience_ran_out(patience: int | None, epoch: int, best_epoch: int | None) -> bool:
    """--patience N: True once N whole epochs have passed since the best val_loss. `epoch` is the next
    one to train (so epoch - 1 are done); no best yet (every val_loss NaN) counts from the start."""
    if patience is None:
        return False
    return (epoch - 1) - (best_epoch or 0) >= patience


def early_stop_message(patience: int | None, best_val_loss: float, best_epoch: int | None) -> str:
    return (
        f"early stopping: val_loss has not improved for {patience} epoch(s) "
        f"(best {best_val_loss:.5f} at epoch {best_epoch}); finishing with the final evaluation of best.pt"
    )
