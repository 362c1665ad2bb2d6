"""Where a run is (epoch, batch, best so far) and the checkpoint payloads that save and restore it."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet_tui.config import RUN_IDENTITY, TrainConfig
from alexnet_tui.engine.checkpoint import CHECKPOINT_FORMAT, load_weights
from alexnet_tui.engine.window import EpochTotals
from alexnet_tui.errors import UsageError
from alexnet_tui.model import ARCHITECTURE


class RunOutcome(enum.Enum):
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class TrainingDiverged(RuntimeError):
    pass


@dataclass(frozen=True)
class RunPosition:
    """Where the run is, for drivers that show it or decide what a key does."""

    prepared: bool
    epoch: int
    batch: int
    run_dir: Path | None

    @property
    def started(self) -> bool:
        return self.epoch > 1 or self.batch > 0


NOT_COMPARED = ("out", "resume", "weights", "verify")  # the weights file is read at a run's start only


def resume_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """Refuse options that would change what the resumed run is; say the ones that may change."""
    current = config.to_dict()
    changed = [key for key in current if key not in NOT_COMPARED and key in saved and saved[key] != current[key]]
    refused = [key for key in changed if key in RUN_IDENTITY]
    if "weight_decay" in changed and (saved["weight_decay"] > 0) != (config.weight_decay > 0):
        refused.append("weight_decay")  # Adam <-> AdamW: the optimizer's saved state has other groups
    if refused:
        key = refused[0]
        option = "--" + key.replace("_", "-")
        raise UsageError(
            f"{option} {current[key]} would change what this run is (it was trained with {option} {saved[key]}); "
            "resume without it, or start a new run with another --out"
        )
    return [f"--{key.replace('_', '-')} {current[key]} (was {saved[key]})" for key in changed]


@dataclass
class RunProgress:
    epoch: int = 1  # the next epoch to train (1-based, as the tutorial counts)
    batch: int = 0  # the next batch of that epoch
    totals: EpochTotals = field(default_factory=EpochTotals)
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    step: int = 0  # optimizer steps taken in the whole run: the learning rate schedule's position

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.totals = self.epoch + 1, 0, EpochTotals()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (`module.`) and torch.compile (`_orig_mod.`) wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def weights_payload(
    model: nn.Module,
    config: TrainConfig,
    class_names: list[str],
    progress: RunProgress,
    split: dict[str, list[str]] | None,
) -> dict:
    """What best.pt holds: enough to evaluate and predict, checked against the model on load, and
    the run's split, so an evaluation reports on the images the run held out whatever changed since."""
    plain = unwrap(model)
    return {
        "format": CHECKPOINT_FORMAT,
        "architecture": ARCHITECTURE,  # "one of ours", whatever the arch (kept so older checkpoints load)
        "arch": getattr(plain, "arch", "tutorial"),
        "model": plain.state_dict(),
        "num_classes": plain.num_classes,
        "image_size": plain.image_size,
        "width": plain.width,
        "class_names": list(class_names),
        "config": config.to_dict(),
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "epoch": progress.epoch,
        "batch": progress.batch,
        "split": split,
    }


def training_payload(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    config: TrainConfig,
    class_names: list[str],
    progress: RunProgress,
    split: dict[str, list[str]] | None,
) -> dict:
    """What last.pt holds: the weights plus everything a resume needs to go on exactly."""
    payload = weights_payload(model, config, class_names, progress, split)
    payload.update(
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict() if scaler.is_enabled() else None,
        partial=progress.totals.to_list(),
        schedule={"step": progress.step},  # the lr schedule is a function of this step (engine/recipe.py)
        # RNG states as tensors: torch.load(weights_only=True) refuses numpy or pickled objects.
        rng={
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        },
    )
    return payload


def restore_training(
    payload: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> RunProgress:
    """Load last.pt into the model, optimizer and RNGs; return where the run stopped."""
    load_weights(unwrap(model), payload)  # strict: leftover or missing keys are refused
    if payload.get("optimizer"):
        lr = optimizer.param_groups[0]["lr"]
        optimizer.load_state_dict(payload["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = lr  # the saved state carries the old rate; a --lr given on resume wins
    if payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng"]["torch"])
    if device.type == "cuda":
        # A last.pt from a machine with more GPUs than this one: restore the devices that exist here.
        for index, state in enumerate(payload["rng"].get("cuda", [])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    return RunProgress(
        payload["epoch"],
        payload["batch"],
        EpochTotals(*payload["partial"]),
        payload["best_val_loss"],
        payload["best_epoch"],
        (payload.get("schedule") or {}).get("step", 0),
    )
