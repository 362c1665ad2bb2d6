"""A run set up once: device, data, model, optimizer, a checkpoint restored, the run directory claimed.

`prepare_run` returns a PreparedRun, the one object the loop (trainer.py), the evaluations
(evaluating.py) and the saves (saving.py) read; nothing is set on them anywhere else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.images import UNREADABLE
from alexnet_tui.data.loading import DataBundle, load_data
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import check_compatible, load_checkpoint
from alexnet_tui.engine.control import Control, StoppedBeforeStart
from alexnet_tui.engine.device import resolve_amp, resolve_device
from alexnet_tui.engine.distributed import Ranks, init_distributed
from alexnet_tui.engine.loaders import EpochBatchSampler, default_workers, make_loader, shut_down
from alexnet_tui.engine.recipe import LearningRate, make_optimizer, start_from, training_criterion
from alexnet_tui.engine.run_dir import RunDirectory
from alexnet_tui.engine.training_state import RunProgress, restore_training, resume_changes
from alexnet_tui.errors import UsageError
from alexnet_tui.model import build_model

Emit = Callable[[ev.Event], None]


@dataclass
class PreparedRun:
    """Everything one run is made of once prepared."""

    config: TrainConfig
    ranks: Ranks
    device: torch.device
    data: DataBundle
    model: nn.Module  # the plain network, what the checkpoints hold
    train_model: nn.Module  # the same network, under DDP's wrapper when distributed
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module  # training loss (--label-smoothing)
    eval_criterion: nn.Module  # never label-smoothed: val_loss stays comparable between recipes
    train_sampler: EpochBatchSampler
    learning_rate: LearningRate
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    run_dir: RunDirectory | None  # held by rank 0; None on the other ranks of a DDP job
    run_path: Path  # the run's folder, as every rank names it
    progress: RunProgress
    resume_notes: list[str]  # options changed on resume, said when the run starts
    loaders: dict[str, DataLoader] = field(default_factory=dict)

    def autocast(self) -> torch.autocast:
        dtype = self.amp_dtype or torch.float32
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None)

    def dataset(self, split: str) -> Dataset:
        """The split's images: --test-split 0 reports on the validation images, as the tutorial did."""
        return self.data.test if split == "test" and self.data.test is not None else self.data.val

    def loader(self, split: str) -> DataLoader:
        """The split's DataLoader, made once (its workers live for the run)."""
        if split not in self.loaders:
            config = self.config
            workers = default_workers(self.data.in_memory) if config.workers is None else config.workers
            options = dict(workers=workers, pin_memory=self.device.type == "cuda", seed=config.seed)
            if split == "train":
                self.loaders[split] = make_loader(self.data.train, batch_sampler=self.train_sampler, **options)
            else:
                self.loaders[split] = make_loader(
                    self.dataset(split), batch_size=config.batch_size, ranks=self.ranks, **options
                )
        return self.loaders[split]

    def batches(self, split: str) -> int:
        """How many batches an evaluation of the split runs (--limit-batches caps it)."""
        count, limit = len(self.loader(split)), self.config.limit_batches
        return min(count, limit) if limit else count

    def close(self) -> None:
        """Shut the loader workers down and let the run directory go."""
        for loader in self.loaders.values():
            shut_down(loader)
        self.loaders.clear()
        if self.run_dir is not None:
            self.run_dir.release()


def prepare_run(
    config: TrainConfig, ranks: Ranks, control: Control, emit: Emit, data: DataBundle | None = None
) -> PreparedRun:
    """Resolve the device, load the data, build model and optimizer, restore a checkpoint. Raises
    UsageError for anything the user must fix; writes nothing before all checks pass."""
    config = config.validate()
    device = init_distributed(ranks, config.device) if ranks.distributed else resolve_device(config.device)
    resumed = load_checkpoint(config.resume) if config.resume else None
    if resumed is not None and "optimizer" not in resumed:
        raise UsageError(f"--resume {resumed['path']}: holds weights only; resume from last.pt or its run folder")
    # Checked before the data is scanned and before anything is written; a resume has them in last.pt.
    imagenet = _pretrained_weights(config, emit) if config.pretrained and resumed is None else None
    if data is None:
        emit(ev.StateChanged(ev.RunState.PREPARING))
        # Under DDP rank 0 scans and fills the caches first; the others then find them ready.
        if ranks.distributed and not ranks.main:
            dist.barrier()
        kept_split = resumed.get("split") if resumed is not None else None
        checking = ev.ProgressThrottle(emit, "checking images")
        data = load_data(config, kept_split, lambda: control.stop_requested, checking)
        if ranks.distributed and ranks.main:
            dist.barrier()
    if control.stop_requested:
        raise StoppedBeforeStart(control.stop_reason)
    num_classes = config.num_classes or len(data.class_names)
    if num_classes < len(data.class_names):
        raise UsageError(f"--num-classes {num_classes} is fewer than the {len(data.class_names)} classes in the data")
    resume_notes: list[str] = []
    if resumed is not None:
        check_compatible(resumed, num_classes, config.image_size, data.class_names, config.width, config.arch)
        resume_notes = resume_changes(resumed["config"], config)
    run_dir, run_path = _claim_run_dir(config, ranks, resumed)
    try:
        run = _build(config, ranks, device, data, num_classes, imagenet, run_dir, run_path, resumed, emit)
    except BaseException:
        if run_dir is not None:
            run_dir.release()  # the folder stays (empty, or the resumed run's as it was); the lock goes
        raise
    run.resume_notes = resume_notes
    if run_dir is not None:
        run_dir.write_config(config)
    return run


def _build(
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    data: DataBundle,
    num_classes: int,
    imagenet: dict[str, torch.Tensor] | None,
    run_dir: RunDirectory | None,
    run_path: Path,
    resumed: dict | None,
    emit: Emit,
) -> PreparedRun:
    torch.manual_seed(config.seed)
    amp_dtype = resolve_amp(config.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # TF32 for the fully connected layers; off by default since PyTorch 1.12.
        torch.set_float32_matmul_precision("high")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config.arch, num_classes, config.image_size, config.width)
    for notice in start_from(model, imagenet, config.freeze):  # the ImageNet weights, what --freeze froze
        emit(ev.Notice(notice))
    model = model.to(device, memory_format=memory_format)
    train_model: nn.Module = model
    if ranks.distributed:
        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        torch.manual_seed(config.seed + ranks.rank)  # different dropout masks on each rank
    optimizer = make_optimizer(model, config)  # fused Adam: one kernel over all 58M parameters
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    sampler = EpochBatchSampler(len(data.train), config.batch_size, config.seed, config.limit_batches, ranks)
    learning_rate = LearningRate.for_run(config, sampler.total_batches())
    progress = RunProgress()
    if resumed is not None:
        progress = restore_training(resumed, model, optimizer, scaler, device)
        if "schedule" not in resumed:  # a last.pt from before the step was kept
            progress.step = learning_rate.step_at(progress.epoch, progress.batch)
    return PreparedRun(
        config=config,
        ranks=ranks,
        device=device,
        data=data,
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        scaler=scaler,
        criterion=training_criterion(config),
        eval_criterion=nn.CrossEntropyLoss(reduction="sum", ignore_index=UNREADABLE),
        train_sampler=sampler,
        learning_rate=learning_rate,
        amp_dtype=amp_dtype,
        memory_format=memory_format,
        run_dir=run_dir,
        run_path=run_path,
        progress=progress,
        resume_notes=[],
    )


def _pretrained_weights(config: TrainConfig, emit: Emit) -> dict[str, torch.Tensor]:
    """--pretrained: the ImageNet weights, downloaded once (with a progress bar), verified, checked."""
    from alexnet_tui.engine.pretrained import pretrained_weights

    progress = ev.ProgressThrottle(emit, "downloading ImageNet weights")
    return pretrained_weights(config.weights, config.verify, lambda text: emit(ev.Notice(text)), progress)


def _claim_run_dir(config: TrainConfig, ranks: Ranks, resumed: dict | None) -> tuple[RunDirectory | None, Path]:
    """Rank 0 creates and locks the folder; under DDP the others learn its path."""
    run_dir = RunDirectory.claim(config, resumed["path"] if resumed else None) if ranks.main else None
    path = run_dir.path if run_dir is not None else Path()
    if ranks.distributed:
        shared = [str(path) if run_dir is not None else ""]
        dist.broadcast_object_list(shared, src=0)
        path = Path(shared[0])
    return run_dir, path
