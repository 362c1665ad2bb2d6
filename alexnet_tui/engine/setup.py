"""Setting a run up once: device, data, model, optimizer, a checkpoint restored, the run directory
claimed, and the loaders. Mixed into the Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from alexnet_tui.data.images import UNREADABLE
from alexnet_tui.data.loading import load_data
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import check_compatible, load_checkpoint
from alexnet_tui.engine.control import StoppedBeforeStart
from alexnet_tui.engine.device import resolve_amp, resolve_device
from alexnet_tui.engine.distributed import init_distributed
from alexnet_tui.engine.loaders import EpochBatchSampler, default_workers, make_loader
from alexnet_tui.engine.recipe import (
    LearningRate,
    make_optimizer,
    start_from,
    training_criterion,
)
from alexnet_tui.engine.run_dir import RunDirectory
from alexnet_tui.engine.training_state import (
    restore_training,
    resume_changes,
)
from alexnet_tui.errors import UsageError
from alexnet_tui.model import build_model

if TYPE_CHECKING:
    from alexnet_tui.engine.trainer import Trainer

    Base = Trainer
else:
    Base = object

RunState = ev.RunState


class Setup(Base):
    def prepare(self) -> None:
        """Resolve the device, load the data, build model and optimizer, restore a checkpoint.
        Raises UsageError for anything the user must fix; writes nothing before all checks pass."""
        config = self.config.validate()
        self.device = init_distributed(self.ranks, config.device) if self.ranks.distributed else None
        self.device = self.device or resolve_device(config.device)
        resumed = load_checkpoint(config.resume) if config.resume else None
        if resumed is not None and "optimizer" not in resumed:
            raise UsageError(f"--resume {resumed['path']}: holds weights only; resume from last.pt or its run folder")
        # Checked before the data is scanned and before anything is written; a resume has them in last.pt.
        imagenet = self._pretrained_weights() if config.pretrained and resumed is None else None
        if self.data is None:
            self._state(RunState.PREPARING)
            # Under DDP rank 0 scans and fills the caches first; the others then find them ready.
            if self.ranks.distributed and not self.ranks.main:
                dist.barrier()
            kept_split = resumed.get("split") if resumed is not None else None
            checking = ev.ProgressThrottle(self.emit, "checking images")
            self.data = load_data(config, kept_split, lambda: self.control.stop_requested, checking)
            if self.ranks.distributed and self.ranks.main:
                dist.barrier()
        if self.control.stop_requested:
            raise StoppedBeforeStart(self.control.stop_reason)
        num_classes = config.num_classes or len(self.data.class_names)
        if num_classes < len(self.data.class_names):
            raise UsageError(
                f"--num-classes {num_classes} is fewer than the {len(self.data.class_names)} classes in the data"
            )
        if resumed is not None:
            check_compatible(resumed, num_classes, config.image_size, self.data.class_names, config.width, config.arch)
            self.resume_notes = resume_changes(resumed["config"], config)
        self._claim_run_dir(resumed)
        torch.manual_seed(config.seed)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            # TF32 for the fully connected layers; off by default since PyTorch 1.12.
            torch.set_float32_matmul_precision("high")
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = build_model(config.arch, num_classes, config.image_size, config.width)
        self._start_from(imagenet)
        self.model = self.model.to(self.device, memory_format=self.memory_format)
        self.train_model: nn.Module = self.model
        if self.ranks.distributed:
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
            torch.manual_seed(config.seed + self.ranks.rank)  # different dropout masks on each rank
        # fused Adam: one kernel over all 58M parameters instead of a Python loop (~7x faster here).
        self.optimizer = make_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = training_criterion(config)  # --label-smoothing applies to training only
        self.eval_criterion = nn.CrossEntropyLoss(reduction="sum", ignore_index=UNREADABLE)
        self.train_sampler = EpochBatchSampler(
            len(self.data.train), config.batch_size, config.seed, config.limit_batches, self.ranks
        )
        self.learning_rate = LearningRate.for_run(config, self.train_sampler.total_batches())
        if resumed is not None:
            self.progress = restore_training(resumed, self.model, self.optimizer, self.scaler, self.device)
            if "schedule" not in resumed:  # a last.pt from before the step was kept
                self.progress.step = self.learning_rate.step_at(self.progress.epoch, self.progress.batch)
        if self.run_dir is not None:
            self.run_dir.write_config(config)
        self.prepared = True

    def _pretrained_weights(self) -> dict[str, torch.Tensor]:
        """--pretrained: the ImageNet weights, downloaded once (with a progress bar), verified, checked."""
        from alexnet_tui.engine.pretrained import pretrained_weights

        progress = ev.ProgressThrottle(self.emit, "downloading ImageNet weights")
        config = self.config
        return pretrained_weights(config.weights, config.verify, lambda text: self.emit(ev.Notice(text)), progress)

    def _start_from(self, imagenet: dict[str, torch.Tensor] | None) -> None:
        """Load the ImageNet weights (all but the head) and freeze what --freeze says, saying both."""
        for notice in start_from(self.model, imagenet, self.config.freeze):
            self.emit(ev.Notice(notice))

    def _claim_run_dir(self, resumed: dict | None) -> None:
        """Rank 0 creates and locks the folder; under DDP the others learn its path."""
        if self.ranks.main:
            self.run_dir = RunDirectory.claim(self.config, resumed["path"] if resumed else None)
        if self.ranks.distributed:
            shared = [str(self.run_dir.path) if self.run_dir else ""]
            dist.broadcast_object_list(shared, src=0)
            self.shared_run_path = Path(shared[0])

    def _loader(self, split: str) -> DataLoader:
        if split not in self._loaders:
            assert self.data is not None
            workers = self.config.workers
            workers = default_workers(self.data.in_memory) if workers is None else workers
            options = dict(workers=workers, pin_memory=self.device.type == "cuda", seed=self.config.seed)
            if split == "train":
                self._loaders[split] = make_loader(self.data.train, batch_sampler=self.train_sampler, **options)
            else:
                dataset = self._dataset(split)
                self._loaders[split] = make_loader(
                    dataset, batch_size=self.config.batch_size, ranks=self.ranks, **options
                )
        return self._loaders[split]

    def _dataset(self, split: str) -> Dataset:
        assert self.data is not None
        if split == "test" and self.data.test is not None:
            return self.data.test
        return self.data.val
