"""fit / train_one_epoch / evaluate for the tutorial's AlexNet; reports through events, never prints."""

from __future__ import annotations

import enum
import json
import math
import os
import socket
import time
import traceback
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from alexnet_tui.config import TrainConfig, to_toml
from alexnet_tui.data import DataBundle, load_data
from alexnet_tui.data.images import UNREADABLE
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointSaveError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from alexnet_tui.engine.control import Control
from alexnet_tui.engine.device import describe, resolve_amp, resolve_device
from alexnet_tui.engine.distributed import (
    Ranks,
    all_reduce_sum,
    any_rank,
    init_distributed,
    launched_ranks,
    weights_agree,
)
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.errors import UsageError
from alexnet_tui.model import ARCHITECTURE, AlexNet

STOP_FILE = "STOP"
REPORT_INTERVAL_S = 0.1  # metrics are read back from the device at most this often
SINGLE_PROCESS = Ranks()
DIST_SYNC_BATCHES = 8  # under DDP, ranks agree on stopping and read metrics back every this many batches


class RunOutcome(enum.Enum):
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class TrainingDiverged(RuntimeError):
    pass


class EpochBatchSampler(Sampler[list[int]]):
    """A seeded shuffle per epoch that can start part-way through, so a resumed run sees the
    same batches an uninterrupted one would."""

    def __init__(self, size: int, batch_size: int, seed: int, limit: int | None, ranks: Ranks = SINGLE_PROCESS) -> None:
        self.size, self.batch_size, self.seed, self.limit, self.ranks = size, batch_size, seed, limit, ranks
        self.epoch, self.start_batch = 1, 0
        # Under DDP each rank takes every world_size-th image of the shared shuffle, padded by
        # wrapping so that all ranks run the same number of batches (as DistributedSampler does).
        self.per_rank = math.ceil(size / ranks.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def total_batches(self) -> int:
        batches = math.ceil(self.per_rank / self.batch_size)
        return min(batches, self.limit) if self.limit else batches

    def __len__(self) -> int:
        return max(0, self.total_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        if self.ranks.distributed:
            padded = order.repeat(math.ceil(self.per_rank * self.ranks.world_size / self.size))
            order = padded[: self.per_rank * self.ranks.world_size][self.ranks.rank :: self.ranks.world_size]
        for batch in range(self.start_batch, self.total_batches()):
            yield order[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()


class Trainer:
    """One run: prepare() once, then fit() (again after a stop, to go on) or evaluate()."""

    def __init__(
        self,
        config: TrainConfig,
        subscribers: Iterable[ev.Subscriber] = (),
        control: Control | None = None,
        data: DataBundle | None = None,
    ) -> None:
        self.config = config
        self.subscribers = list(subscribers)
        self.control = control or Control()
        self.data = data
        self.prepared = False
        self.epoch = 1  # the next epoch to train (1-based, as the tutorial counts)
        self.batch = 0  # the next batch of that epoch
        self.partial = [0.0, 0.0, 0.0, 0.0]  # loss sum, correct, images, seconds of the epoch so far
        self.best_val_loss = math.inf
        self.best_epoch: int | None = None
        self.run_dir: Path | None = None
        self._loaders: dict[str, DataLoader] = {}
        self.ranks = launched_ranks()

    # ---- events -------------------------------------------------------------------------------
    def subscribe(self, subscriber: ev.Subscriber) -> None:
        self.subscribers.append(subscriber)

    def emit(self, event: ev.Event) -> None:
        if not self.ranks.main:
            return  # under DDP rank 0 speaks for the job
        for subscriber in self.subscribers:
            subscriber(event)

    def _state(self, state: str) -> None:
        self.emit(ev.StateChanged(state))

    # ---- set-up -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Resolve the device, load the data, build model and optimizer, restore a checkpoint.
        Raises UsageError for anything the user must fix; writes nothing before all checks pass."""
        config = self.config.validate()
        if self.ranks.distributed:
            self.device = init_distributed(self.ranks, config.device)
        else:
            self.device = resolve_device(config.device)
        resumed = load_checkpoint(config.resume) if config.resume else None
        if resumed is not None and "optimizer" not in resumed:
            raise UsageError(f"--resume {resumed['path']}: holds weights only; resume from last.pt or its run folder")
        if self.data is None:
            # Under DDP rank 0 scans and fills the caches first; the others then find them ready.
            if self.ranks.distributed and not self.ranks.main:
                dist.barrier()
            self.data = load_data(config)
            if self.ranks.distributed and self.ranks.main:
                dist.barrier()
        num_classes = config.num_classes or len(self.data.class_names)
        if num_classes < len(self.data.class_names):
            raise UsageError(
                f"--num-classes {num_classes} is fewer than the {len(self.data.class_names)} classes in the data"
            )
        if resumed is not None:
            check_compatible(resumed, num_classes, config.image_size, self.data.class_names)
        if self.ranks.main:
            self.run_dir = self._choose_run_dir(resumed)
        if self.ranks.distributed:
            shared = [str(self.run_dir) if self.run_dir else ""]
            dist.broadcast_object_list(shared, src=0)
            self.run_dir = Path(shared[0])
        torch.manual_seed(config.seed)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            # TF32 for the fully connected layers; off by default since PyTorch 1.12.
            torch.set_float32_matmul_precision("high")
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = AlexNet(num_classes, config.image_size).to(self.device, memory_format=self.memory_format)
        self.train_model: nn.Module = self.model
        if self.ranks.distributed:
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
            torch.manual_seed(config.seed + self.ranks.rank)  # different dropout masks on each rank
        # fused Adam: one kernel over all 58M parameters instead of a Python loop (~7x faster here).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(reduction="sum", ignore_index=UNREADABLE)
        self.train_sampler = EpochBatchSampler(
            len(self.data.train), config.batch_size, config.seed, config.limit_batches, self.ranks
        )
        if resumed is not None:
            self._restore(resumed)
        if self.ranks.main:
            (self.run_dir / "config.toml").write_text(to_toml(config))
        self.prepared = True

    def _choose_run_dir(self, resumed: dict[str, Any] | None) -> Path:
        if resumed is not None:
            run_dir = Path(self.config.out) if self.config.out else Path(resumed["path"]).parent
        else:
            run_dir = Path(self.config.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
            if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
                raise UsageError(
                    f"--out {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
                )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            # A run killed mid-save (kill -9) leaves its temp file; this run is now the folder's only writer.
            for leftover in [*run_dir.glob(".*.pt.tmp*"), run_dir / STOP_FILE]:
                leftover.unlink(missing_ok=True)
            probe = run_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise UsageError(f"--out {run_dir}: cannot write there ({error.strerror}); choose another --out") from None
        return run_dir

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        if payload.get("optimizer"):
            self.optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.epoch, self.batch = payload["epoch"], payload["batch"]
        self.partial = list(payload["partial"])
        self.best_val_loss = payload["best_val_loss"]
        self.best_epoch = payload["best_epoch"]
        torch.set_rng_state(payload["rng"]["torch"])
        if self.device.type == "cuda" and payload["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])

    def _loader(self, split: str) -> DataLoader:
        if split in self._loaders:
            return self._loaders[split]
        assert self.data is not None
        workers = self.config.workers
        if workers is None:
            workers = 0 if self.data.in_memory else max(1, min(4, (os.cpu_count() or 1) - 1))
        options: dict[str, Any] = {
            "num_workers": workers,
            "pin_memory": self.device.type == "cuda",
            # Its own generator: a loader seeding its workers from the global RNG would shift the
            # dropout masks of a resumed run away from those of an uninterrupted one.
            "generator": torch.Generator().manual_seed(self.config.seed),
        }
        if workers > 0:
            # forkserver, not fork: the TUI process is multithreaded, and fork copies held locks.
            options.update(multiprocessing_context="forkserver", persistent_workers=True, prefetch_factor=4)
        if split == "train":
            loader = DataLoader(self.data.train, batch_sampler=self.train_sampler, **options)
        else:
            dataset = self._dataset(split)
            if self.ranks.distributed:
                dataset = Subset(dataset, range(self.ranks.rank, len(dataset), self.ranks.world_size))
            loader = DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False, **options)
        self._loaders[split] = loader
        return loader

    def _dataset(self, split: str) -> Dataset:
        assert self.data is not None
        if split == "test" and self.data.test is not None:
            return self.data.test
        return self.data.val

    # ---- the hot loop -------------------------------------------------------------------------
    def _to_device(self, images: torch.Tensor, labels: torch.Tensor, flips: torch.Tensor | None):
        return (
            to_model_input(images, self.device, flips, self.memory_format),
            labels.to(self.device, non_blocking=True),
        )

    def _flips(self, epoch: int, batch: int, size: int) -> torch.Tensor:
        seed = self.config.seed * 1_000_003 + epoch * 10_007 + batch + self.ranks.rank * 7_919
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(size, generator=generator) < 0.5

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def train_one_epoch(self, epoch: int) -> bool:
        """Train from self.batch to the end of the epoch; False if a stop request ended it early."""
        config, model = self.config, self.train_model
        model.train()
        self.train_sampler.set_epoch(epoch, self.batch)
        batches = self.train_sampler.total_batches()
        loss_sum, correct, seen, seconds = self.partial
        window: list[torch.Tensor] = []
        window_start = time.perf_counter()
        data_wait = 0.0  # seconds this window spent waiting for the loader

        def flush() -> None:
            nonlocal loss_sum, correct, seen, window_start, data_wait
            if not window:
                return
            # One device->host read per window, not a .item() per batch: on CUDA each read is a sync.
            rows = torch.stack(window).tolist()
            now = time.perf_counter()
            window_images = int(sum(row[3] for row in rows))  # all ranks' images under DDP
            rate = window_images / max(now - window_start, 1e-9)
            wait_share = min(1.0, data_wait / max(now - window_start, 1e-9))
            first = self.batch - len(rows)
            unreadable = window_images - int(sum(row[2] for row in rows))
            if unreadable:
                self.emit(ev.Notice(f"{unreadable} image(s) became unreadable after the scan; skipped", "warning"))
            for offset, (loss, hits, count, _) in enumerate(rows):
                if config.stop_on_nan and not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss} at epoch {epoch}, batch {first + offset + 1}; "
                        f"try a lower --lr (now {config.lr:g}); the best checkpoint is kept"
                    )
                loss_sum += loss * count
                correct += hits
                seen += count
                self.emit(
                    ev.BatchEnd(
                        epoch,
                        config.epochs,
                        first + offset + 1,
                        batches,
                        loss,
                        hits / max(count, 1),
                        loss_sum / max(seen, 1),
                        correct / max(seen, 1),
                        rate,
                        wait_share,
                    )
                )
            window.clear()
            window_start = now
            data_wait = 0.0

        self.emit(ev.EpochStarted(epoch, config.epochs, batches))
        epoch_start = fetch_start = time.perf_counter()
        for images, labels in self._loader("train"):
            data_wait += time.perf_counter() - fetch_start
            if self.ranks.distributed:
                # Ranks must stop at the same batch: they agree every DIST_SYNC_BATCHES batches.
                if self.ranks.main:
                    self._poll_stop_file()
                agreed = (self.batch % DIST_SYNC_BATCHES == 0) and any_rank(self.control.stop_requested, self.device)
                if agreed and not self.control.stop_requested:
                    self.control.request_stop("another rank was asked to stop")
                evaluate_now, must_pause = False, agreed
            else:
                self._poll_stop_file()
                evaluate_now = self.control.take_evaluation_request()
                must_pause = self.control.stop_requested or self.control.paused
            if evaluate_now or must_pause:
                flush()
                seconds_so_far = seconds + time.perf_counter() - epoch_start
                self.partial = [loss_sum, correct, seen, seconds_so_far]
                if not self._at_boundary(epoch, evaluate_now):
                    return False
                epoch_start = time.perf_counter() - (seconds_so_far - seconds)
                window_start = time.perf_counter()
                data_wait = 0.0
                model.train()
            inputs, targets = self._to_device(images, labels, self._flips(epoch, self.batch, len(labels)))
            with self._autocast():
                logits = model(inputs)
                valid = (targets != UNREADABLE).sum()
                loss = self.criterion(logits.float(), targets) / valid.clamp(min=1)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            hits = (logits.argmax(1) == targets).sum()
            images_in_batch = torch.tensor(float(len(labels)), device=self.device)
            stats = torch.stack([loss.detach().float(), hits.float(), valid.float(), images_in_batch])
            if self.ranks.distributed:
                # The whole job's figures, not one rank's: sum loss*count, hits and counts over ranks.
                totals = all_reduce_sum(torch.stack([stats[0] * stats[2], stats[1], stats[2], stats[3]]))
                stats = torch.stack([totals[0] / totals[2].clamp(min=1), totals[1], totals[2], totals[3]])
            window.append(stats)
            self.batch += 1
            if self.ranks.distributed:
                if self.batch % DIST_SYNC_BATCHES == 0:  # the same batches on every rank
                    flush()
            elif time.perf_counter() - window_start >= REPORT_INTERVAL_S:
                flush()
            fetch_start = time.perf_counter()
        flush()
        self.partial = [loss_sum, correct, seen, seconds + time.perf_counter() - epoch_start]
        return True

    def _requested_evaluation(self) -> None:
        """What `e` asks for: validation loss and accuracy, then the full report."""
        if self.evaluate("val", requested=True) is not None:
            self.write_report("val")

    def _poll_stop_file(self) -> None:
        """`alexnet-tui watch` (or `touch RUN_DIR/STOP`) asks for a graceful stop without a shared terminal."""
        if self.run_dir is not None and (self.run_dir / STOP_FILE).exists():
            (self.run_dir / STOP_FILE).unlink(missing_ok=True)
            self.control.request_stop(f"{STOP_FILE} file found in the run directory")

    def _at_boundary(self, epoch: int, evaluate_now: bool) -> bool:
        """Serve pause and evaluate-now requests; False when the run must stop here."""
        if evaluate_now and not self.control.stop_requested:
            self._requested_evaluation()
            if not self.control.paused:
                self._state("training")
        if self.control.paused and not self.control.stop_requested:
            self._state("paused")
            while self.control.paused and not self.control.stop_requested:
                self.control.wait_while_paused()
                if self.control.take_evaluation_request():
                    self._requested_evaluation()
                    self._state("paused")
            if not self.control.stop_requested:
                self._state("training")
        if self.control.stop_requested:
            self._stop(epoch)
            return False
        return True

    def _stop(self, epoch: int) -> None:
        path = self.save_last()
        self.emit(ev.Stopped(epoch, self.batch, str(path), self.control.stop_reason))
        self._state("stopped")

    @torch.inference_mode()
    def evaluate(
        self, split: str = "val", requested: bool = False, checkpoint: Path | None = None
    ) -> tuple[float, float] | None:
        """Loss and accuracy on a split; None if a stop request cut it short. `checkpoint` names
        the weights being reported (the final evaluation of best.pt)."""
        was_training = self.model.training
        self.model.eval()
        loader = self._loader(split)
        limit = self.config.limit_batches
        batches = min(len(loader), limit) if limit else len(loader)
        self._state("evaluating")
        self.emit(ev.EvaluationStarted(split, batches))
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        try:
            for index, (images, labels) in enumerate(loader):
                if index >= batches:
                    break
                if not self.ranks.distributed:
                    self._poll_stop_file()
                    if self.control.stop_requested:
                        return None
                inputs, targets = self._to_device(images, labels, None)
                with self._autocast():
                    logits = self.model(inputs)
                loss_sum += self.criterion(logits.float(), targets)
                hits += (logits.argmax(1) == targets).sum()
                count += (targets != UNREADABLE).sum()
            # Sums stay on the device until the end: one read-back for the whole pass.
            sums = torch.stack([loss_sum, hits, count])
            if self.ranks.distributed:
                sums = all_reduce_sum(sums)
            total_loss, total_hits, total = sums.tolist()
        finally:
            self.model.train(was_training)
        loss, acc = total_loss / max(total, 1), total_hits / max(total, 1)
        self.emit(ev.EvaluationEnd(split, loss, acc, int(total), str(checkpoint) if checkpoint else None, requested))
        return loss, acc

    def write_report(self, split: str = "val") -> Path:
        """The full evaluation report (per-class metrics, confusion, mistakes) into the run directory."""
        from alexnet_tui.engine.report import evaluation_report, format_report

        assert self.data is not None and self.run_dir is not None
        report = evaluation_report(
            self.model, self._dataset(split), self.data.class_names, self.device, self.config.batch_size
        )
        report.update(split=split, epoch=self.epoch, batch=self.batch)
        path = self.run_dir / f"evaluation-{split}.json"
        path.write_text(json.dumps(report, indent=2))
        self.emit(ev.Notice(format_report(report) + f"\nreport written to {path}"))
        return path

    # ---- checkpoints --------------------------------------------------------------------------
    def _payload(self, with_training_state: bool) -> dict[str, Any]:
        assert self.data is not None
        model = getattr(self.model, "_orig_mod", self.model)
        model = getattr(model, "module", model)
        payload: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "architecture": ARCHITECTURE,
            "model": model.state_dict(),
            "num_classes": model.num_classes,
            "image_size": model.image_size,
            "class_names": list(self.data.class_names),
            "config": self.config.to_dict(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epoch": self.epoch,
            "batch": self.batch,
        }
        if with_training_state:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                partial=list(self.partial),
                rng={
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                },
            )
        return payload

    def save_last(self) -> Path:
        assert self.run_dir is not None
        if not self.ranks.main:
            return self.run_dir / "last.pt"
        return save_checkpoint(self._payload(with_training_state=True), self.run_dir / "last.pt")

    def _save_best(self) -> Path:
        assert self.run_dir is not None
        if not self.ranks.main:
            return self.run_dir / "best.pt"
        return save_checkpoint(self._payload(with_training_state=False), self.run_dir / "best.pt")

    # ---- the whole run ------------------------------------------------------------------------
    def fit(self) -> RunOutcome:
        """Train the remaining epochs, keep the best by val_loss, then report the best on the test split."""
        if not self.prepared:
            self.prepare()
        assert self.data is not None and self.run_dir is not None
        config = self.config
        self.control.reset()
        start = time.perf_counter()
        self.emit(
            ev.RunStarted(
                str(self.run_dir),
                describe(self.device),
                str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                config.to_dict(),
                self.data.summary(),
                self.epoch,
                self.batch,
                os.getpid(),
                socket.gethostname(),
            )
        )
        if self.data.skipped:
            self.emit(ev.Notice(f"skipped {len(self.data.skipped)} unreadable file(s) in {self.data.root}", "warning"))
        self._state("training")
        try:
            while self.epoch <= config.epochs:
                epoch = self.epoch
                if not self.train_one_epoch(epoch):
                    return RunOutcome.STOPPED
                result = self.evaluate("val")
                if result is None:
                    self._stop(epoch)
                    return RunOutcome.STOPPED
                self._state("training")
                val_loss, val_acc = result
                loss_sum, correct, seen, seconds = self.partial
                improved = val_loss < self.best_val_loss
                if improved:
                    previous = (self.best_val_loss, self.best_epoch)
                    self.best_val_loss, self.best_epoch = val_loss, epoch
                    try:
                        path = self._save_best()
                    except CheckpointSaveError:
                        self.best_val_loss, self.best_epoch = previous  # so a retry saves it again
                        raise
                    self.emit(ev.BestCheckpoint(epoch, previous[0], val_loss, str(path)))
                self.epoch, self.batch, self.partial = epoch + 1, 0, [0.0, 0.0, 0.0, 0.0]
                self.emit(
                    ev.EpochEnd(
                        epoch,
                        config.epochs,
                        loss_sum / max(seen, 1),
                        correct / max(seen, 1),
                        val_loss,
                        val_acc,
                        seen / max(seconds, 1e-9),
                        seconds,
                        improved,
                    )
                )
                self.save_last()
            return self._finish(start)
        except TrainingDiverged as error:
            return self._fail(str(error))
        except CheckpointSaveError as error:
            # The weights and optimizer stay in memory: fix the disk and start again to save and go on.
            return self._fail(f"{error}; training state is kept in memory, fix it and start again (s in the TUI)")
        except torch.OutOfMemoryError:
            message = (
                f"out of memory on {self.device} at batch size {config.batch_size}; "
                f"try --batch-size {max(1, config.batch_size // 2)} or a smaller --image-size"
            )
        except Exception as error:  # noqa: BLE001 - reported as a Failed event with its traceback, not swallowed
            return self._fail(f"{type(error).__name__}: {error}", traceback.format_exc())
        # After OOM the exception's frames hold the big tensors: free them outside the except block.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self._fail(message)

    def _fail(self, message: str, details: str = "") -> RunOutcome:
        self.emit(ev.Failed(message, details))
        self._state("failed")
        return RunOutcome.FAILED

    def _finish(self, start: float) -> RunOutcome:
        """Reload the best weights and report them on data never used to pick them."""
        assert self.run_dir is not None
        if self.ranks.distributed:
            if not weights_agree(self.model, self.device):
                return self._fail("the ranks' weights differ; the DDP run is not consistent")
            self.emit(ev.Notice(f"weights identical on all {self.ranks.world_size} ranks"))
            dist.barrier()  # rank 0 has written best.pt
        best = self.run_dir / "best.pt"
        if best.exists():
            self.model.load_state_dict(load_checkpoint(best)["model"])
        split = "test" if self.data is not None and self.data.test is not None else "val"
        # With --test-split 0 this reports on the validation images, as the tutorial did.
        result = self.evaluate(split, checkpoint=best)
        if result is None:
            self._stop(self.epoch)
            return RunOutcome.STOPPED
        self.emit(ev.Finished(self.best_val_loss, result[0], result[1], time.perf_counter() - start))
        self._state("finished")
        return RunOutcome.FINISHED

    def close(self) -> None:
        """Shut down loader worker processes (and leave the process group under DDP)."""
        if self.ranks.distributed and dist.is_initialized():
            dist.destroy_process_group()
        for loader in self._loaders.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._loaders.clear()
