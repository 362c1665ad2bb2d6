"""fit / train_one_epoch / evaluate for the tutorial's AlexNet; reports through events, never prints."""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from alexnet_tui.config import TrainConfig
from alexnet_tui.data import DataBundle, load_data
from alexnet_tui.data.images import UNREADABLE
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.augment import augmented_input
from alexnet_tui.engine.checkpoint import CheckpointSaveError, check_compatible, load_checkpoint
from alexnet_tui.engine.checkpoint_writer import CheckpointWriter
from alexnet_tui.engine.control import Control, StoppedBeforeStart
from alexnet_tui.engine.device import describe, resolve_amp, resolve_device
from alexnet_tui.engine.distributed import agree, all_reduce_sum, init_distributed, launched_ranks, weights_agree
from alexnet_tui.engine.evaluation import loss_and_accuracy
from alexnet_tui.engine.loaders import EpochBatchSampler, default_workers, make_loader, shut_down
from alexnet_tui.engine.recipe import (
    LearningRate,
    early_stop_message,
    make_optimizer,
    patience_ran_out,
    start_from,
    training_criterion,
)
from alexnet_tui.engine.run_dir import RunDirectory
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.engine.training_state import (
    RunOutcome,
    RunPosition,
    RunProgress,
    TrainingDiverged,
    restore_training,
    resume_changes,
    training_payload,
    weights_payload,
)
from alexnet_tui.engine.window import MetricWindow
from alexnet_tui.errors import UsageError
from alexnet_tui.model import build_model

RunState = ev.RunState
REPORT_INTERVAL_S = 0.1  # metrics are read back from the device at most this often
REQUEST_POLL_S = 0.2  # the run directory is looked at for requests at most this often while training
DIST_SYNC_BATCHES = 8  # under DDP, ranks agree on stopping and read metrics back every this many batches


class Trainer:
    """One run: prepare() once, then fit() (again after a stop, to go on) or evaluate_now()."""

    def __init__(
        self,
        config: TrainConfig,
        subscribers: Iterable[ev.Subscriber] = (),
        control: Control | None = None,
        data: DataBundle | None = None,
    ) -> None:
        self.config = config
        self.ranks = launched_ranks()
        self.events = ev.EventBus(subscribers, muted=not self.ranks.main)
        self.control = control or Control()
        self.data = data
        self.prepared = False
        self.progress = RunProgress()
        self.run_dir: RunDirectory | None = None
        self.resume_notes: list[str] = []  # options changed on resume, said when the run starts
        self._last_poll = 0.0
        self._loaders: dict[str, DataLoader] = {}

    # ---- events and the drivers' view ---------------------------------------------------------
    def subscribe(self, subscriber: ev.Subscriber) -> None:
        self.events.subscribe(subscriber)

    def emit(self, event: ev.Event) -> None:
        self.events.emit(event)

    def _state(self, state: RunState) -> None:
        self.emit(ev.StateChanged(state))

    def position(self) -> RunPosition:
        return RunPosition(
            self.prepared, self.progress.epoch, self.progress.batch, self.run_dir.path if self.run_dir else None
        )

    # ---- set-up -------------------------------------------------------------------------------
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

    # ---- the hot loop -------------------------------------------------------------------------
    def _batch_seed(self, epoch: int, batch: int) -> int:
        return self.config.seed * 1_000_003 + epoch * 10_007 + batch + self.ranks.rank * 7_919

    def _flips(self, epoch: int, batch: int, size: int) -> torch.Tensor:
        seed = self._batch_seed(epoch, batch)
        return torch.rand(size, generator=torch.Generator().manual_seed(seed)) < 0.5

    def _train_input(self, images: torch.Tensor, epoch: int) -> torch.Tensor:
        """The tutorial's flips; with --augment, random resized crops too (seeded per batch as the flips)."""
        flips = self._flips(epoch, self.progress.batch, len(images))
        if not self.config.augment:
            return to_model_input(images, self.device, flips, self.memory_format)
        # Another stream than the flips' (an LCG step of their seed), as reproducible on resume.
        seed = (self._batch_seed(epoch, self.progress.batch) * 6_364_136_223_846_793_005 + 1) % 2**63
        return augmented_input(images, self.device, flips, self.config.image_size, seed, self.memory_format)

    def _autocast(self) -> torch.autocast:
        dtype = self.amp_dtype or torch.float32
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """One optimizer step; returns [mean loss, hits, readable images, images] still on the device."""
        inputs = self._train_input(images, epoch)
        targets = labels.to(self.device, non_blocking=True)
        with self._autocast():
            logits = self.train_model(inputs)
            readable = (targets != UNREADABLE).sum()
            loss = self.criterion(logits.float(), targets) / readable.clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        hits = (logits.argmax(1) == targets).sum()
        images_in_batch = torch.tensor(float(len(labels)), device=self.device)
        stats = torch.stack([loss.detach().float(), hits.float(), readable.float(), images_in_batch])
        if self.ranks.distributed:
            # The whole job's figures, not one rank's: sum loss*count, hits and counts over ranks.
            totals = all_reduce_sum(torch.stack([stats[0] * stats[2], stats[1], stats[2], stats[3]]))
            stats = torch.stack([totals[0] / totals[2].clamp(min=1), totals[1], totals[2], totals[3]])
        return stats

    def train_one_epoch(self, epoch: int) -> bool:
        """Train from the saved batch to the end of the epoch; False if a stop request ended it early."""
        self.train_model.train()
        self.train_sampler.set_epoch(epoch, self.progress.batch)
        batches = self.train_sampler.total_batches()
        window = MetricWindow()
        self.emit(ev.EpochStarted(epoch, self.config.epochs, batches))
        fetch_start = time.perf_counter()
        for images, labels in self._loader("train"):
            window.data_wait += time.perf_counter() - fetch_start
            evaluate_now, must_pause = self._requests_at_boundary()
            if evaluate_now or must_pause:
                self._report(window, epoch, batches)
                if not self._at_boundary(epoch, evaluate_now):
                    return False
                window.restart()  # the pause or evaluation is not training time
                self.train_model.train()
            lr = self.learning_rate.apply(self.optimizer, self.progress.step)  # --schedule: per batch
            window.add(self._train_step(images, labels, epoch), lr)
            self.progress.batch += 1
            self.progress.step += 1
            if self.ranks.distributed:
                if self.progress.batch % DIST_SYNC_BATCHES == 0:  # the same batches on every rank
                    self._report(window, epoch, batches)
            elif window.elapsed() >= REPORT_INTERVAL_S:
                self._report(window, epoch, batches)
            fetch_start = time.perf_counter()
        self._report(window, epoch, batches)
        return True

    def _requests_at_boundary(self) -> tuple[bool, bool]:
        """(evaluate now, pause or stop here). Under DDP the ranks agree every few batches."""
        self._serve_requests()
        if not self.ranks.distributed:
            return self.control.take_evaluation_request(), self.control.stop_requested or self.control.paused
        if self.progress.batch % DIST_SYNC_BATCHES:
            return False, False
        stop, pause, evaluate = self._agree()
        return evaluate, stop or pause

    def _agree(self) -> tuple[bool, bool, bool]:
        """Under DDP: the same stop, pause and evaluate-now on every rank, mirrored into each Control."""
        control = self.control
        stop, pause, evaluate = agree(
            control.stop_requested, control.paused, control.take_evaluation_request(), self.ranks, self.device
        )
        if stop and not control.stop_requested:
            control.request_stop("another rank was asked to stop")
        if not self.ranks.main:
            control.pause() if pause else control.resume()
        return stop, pause, evaluate

    def _serve_requests(self, every_s: float = REQUEST_POLL_S) -> None:
        """Requests from `attach` or a STOP file (rank 0 holds the folder), acknowledged on every screen."""
        if self.run_dir is None or time.monotonic() - self._last_poll < every_s:
            return
        self._last_poll = time.monotonic()
        for request in self.run_dir.take_requests():
            self.control.apply(request.command, request.sender)
            self.emit(ev.ControlAck(request.command, request.sender))

    def _report(self, window: MetricWindow, epoch: int, batches: int) -> None:
        """Read the window back once, add it to the epoch's totals and emit a BatchEnd per batch."""
        if not len(window):
            return
        rows, seconds, wait_share = window.read()
        totals = self.progress.totals
        totals.seconds += seconds
        images = sum(row.images for row in rows)
        rate = images / seconds
        unreadable = int(images - sum(row.readable for row in rows))
        if unreadable:
            self.emit(ev.Notice(f"{unreadable} image(s) became unreadable after the scan; skipped", "warning"))
        first = self.progress.batch - len(rows)
        seconds_per_batch = seconds / len(rows)
        for offset, row in enumerate(rows):
            batch = first + offset + 1
            if self.config.stop_on_nan and not math.isfinite(row.loss):
                raise TrainingDiverged(
                    f"loss became {row.loss} at epoch {epoch}, batch {batch}; "
                    f"try a lower --lr (now {self.config.lr:g}); the best checkpoint is kept"
                )
            totals.add(row)
            left = (self.config.epochs - epoch) * batches + batches - batch
            self.emit(
                ev.BatchEnd(
                    epoch,
                    self.config.epochs,
                    batch,
                    batches,
                    row.loss,
                    row.hits / max(row.readable, 1),
                    totals.loss,
                    totals.accuracy,
                    rate,
                    wait_share,
                    left * seconds_per_batch,
                    row.lr,
                )
            )

    def _at_boundary(self, epoch: int, evaluate_now: bool) -> bool:
        """Serve pause and evaluate-now requests; False when the run must stop here."""
        if evaluate_now and not self.control.stop_requested:
            self._requested_evaluation()
            if not self.control.paused:
                self._state(RunState.TRAINING)
        if self.control.paused and not self.control.stop_requested:
            self._state(RunState.PAUSED)
            while self.control.paused and not self.control.stop_requested:
                self.control.wait_while_paused()
                self._serve_requests(every_s=0)
                evaluate_now = self.control.take_evaluation_request()
                if self.ranks.distributed:
                    _, _, evaluate_now = self._agree()  # every rank goes round this loop together
                if evaluate_now:
                    self._requested_evaluation()
                    self._state(RunState.PAUSED)
            if not self.control.stop_requested:
                self._state(RunState.TRAINING)
        if self.control.stop_requested:
            self._stop(epoch)
            return False
        return True

    def _requested_evaluation(self) -> None:
        """The full report; under DDP (where the report is not sharded) loss and accuracy, all ranks."""
        if self.ranks.distributed:
            self.evaluate("val", requested=True)
        else:
            self._write_report("val")

    def _stop(self, epoch: int) -> None:
        path = self.save_last(wait=True)  # Stopped names a last.pt that is on disk
        self.emit(ev.Stopped(epoch, self.progress.batch, str(path), self.control.stop_reason))
        self.control.stop_served()
        self._state(RunState.STOPPED)

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self,
        split: str = "val",
        checkpoint: Path | None = None,
        model: nn.Module | None = None,
        requested: bool = False,
    ) -> tuple[float, float] | None:
        """Loss and accuracy on a split; None if a stop request cut it short. `checkpoint` names
        the weights being reported (the final evaluation of best.pt, in `model`), with --tta if asked."""
        loader = self._loader(split)
        limit = self.config.limit_batches
        batches = min(len(loader), limit) if limit else len(loader)
        tta = self.config.tta and checkpoint is not None
        self._state(RunState.EVALUATING)
        if tta:
            self.emit(ev.Notice("--tta: each image's prediction is averaged with its mirror image's"))
        self.emit(ev.EvaluationStarted(split, batches))
        sums = loss_and_accuracy(
            model or self.model,
            loader,
            batches,
            self.eval_criterion,  # never label-smoothed: val_loss stays comparable between recipes
            lambda images: to_model_input(images, self.device, None, self.memory_format),
            self._autocast,
            self._stop_during_evaluation,
            ev.ProgressThrottle(self.emit, f"evaluating on {split}"),
            tta=tta,
        )
        if sums is None:
            return None
        if self.ranks.distributed:
            sums = all_reduce_sum(sums)
        total_loss, total_hits, total = sums.tolist()  # one read-back for the whole pass
        loss, acc = total_loss / max(total, 1), total_hits / max(total, 1)
        self.emit(ev.EvaluationEnd(split, loss, acc, int(total), str(checkpoint) if checkpoint else None, requested))
        return loss, acc

    def _patience_ran_out(self, say: bool = True) -> bool:
        """--patience N: N epochs without a better val_loss end the run as finished (on best.pt)."""
        progress = self.progress
        if not patience_ran_out(self.config.patience, progress.epoch, progress.best_epoch):
            return False
        if say:
            self.emit(ev.Notice(early_stop_message(self.config.patience, progress.best_val_loss, progress.best_epoch)))
        return True

    def _stop_during_evaluation(self) -> bool:
        if self.ranks.distributed:
            return False  # ranks must run the same collectives: they stop at the next training batch
        self._serve_requests()
        return self.control.stop_requested

    def evaluate_now(self, split: str = "val") -> Path | None:
        """`e` between runs (idle, stopped, finished), from the driver's thread: prepare if need
        be, write the full report, and say the state the run is back in."""
        if not self.prepared:
            self.prepare()
        path = self._write_report(split)
        if self.progress.epoch > self.config.epochs or self._patience_ran_out(say=False):
            self._state(RunState.FINISHED)
        else:
            self._state(RunState.STOPPED if self.position().started else RunState.IDLE)
        return path

    def _write_report(self, split: str) -> Path | None:
        """What `e` asks for, in one pass: loss, accuracy, per-class metrics, confusion and the
        most confident mistakes, into RUN_DIR/evaluation-SPLIT.json. None if a stop cut it short."""
        from alexnet_tui.engine.report import evaluation_report, format_report

        assert self.data is not None and self.run_dir is not None
        self._state(RunState.EVALUATING)
        dataset = self._dataset(split)
        report = evaluation_report(
            self.model,
            self._loader(split),
            dataset,
            self.data.class_names,
            self.device,
            self.memory_format,
            self._stop_during_evaluation,
            on_progress=ev.ProgressThrottle(self.emit, f"evaluation report on {split}"),
        )
        if report is None:
            return None
        report.update(split=split, epoch=self.progress.epoch, batch=self.progress.batch)
        path = self.run_dir.path / f"evaluation-{split}.json"
        path.write_text(json.dumps(report, indent=2))
        self.emit(ev.EvaluationEnd(split, report["loss"], report["accuracy"], report["images"], None, True))
        self.emit(ev.Notice(format_report(report) + f"\nreport written to {path}"))
        self.emit(ev.ReportWritten(split, str(path)))
        return path

    # ---- checkpoints --------------------------------------------------------------------------
    # Off the hot path: the state is copied to the CPU here, on the training thread (training goes on
    # changing the tensors in place), and written by one background thread (engine/checkpoint_writer.py),
    # still atomically (temp file, fsync, os.replace). A save waits for the one before; a failed write
    # is raised as CheckpointSaveError at the next wait: the next epoch's end, a stop, the finish.
    def save_last(self, wait: bool = True) -> Path:
        """last.pt (after best.pt, if _save_best staged it): snapshotted now, written in the background.
        With wait, returns once both are on disk, or raises CheckpointSaveError."""
        if self.run_dir is None:  # a DDP rank other than 0: rank 0 writes for the job
            return self.shared_run_path / "last.pt"
        assert self.data is not None
        writer = self._checkpoints = getattr(self, "_checkpoints", None) or CheckpointWriter()
        payload = training_payload(
            self.model,
            self.optimizer,
            self.scaler,
            self.device,
            self.config,
            self.data.class_names,
            self.progress,
            self.data.split,
        )
        path = writer.stage(payload, self.run_dir.path / "last.pt")
        writer.submit()
        if wait:
            writer.wait()
        return path

    def _save_best(self, previous: tuple[float, int | None]) -> Path:
        """Stage best.pt (snapshotted now; save_last writes it first). If it cannot be written,
        best_val_loss and best_epoch go back to `previous`, so that a retry saves a best again."""
        if self.run_dir is None:
            return self.shared_run_path / "best.pt"
        assert self.data is not None
        writer = self._checkpoints = getattr(self, "_checkpoints", None) or CheckpointWriter()
        payload = weights_payload(self.model, self.config, self.data.class_names, self.progress, self.data.split)

        def roll_back() -> None:
            self.progress.best_val_loss, self.progress.best_epoch = previous

        return writer.stage(payload, self.run_dir.path / "best.pt", on_failure=roll_back)

    # ---- the whole run ------------------------------------------------------------------------
    def fit(self) -> RunOutcome:
        """Train the remaining epochs, keep the best by val_loss, then report the best on the test split."""
        if not self.prepared:
            self.prepare()
        assert self.data is not None
        start = time.perf_counter()
        self.emit(
            ev.RunStarted(
                str(self.run_dir.path if self.run_dir else self.shared_run_path),
                describe(self.device),
                str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                self.config.to_dict(),
                self.data.summary(),
                self.progress.epoch,
                self.progress.batch,
                os.getpid(),
                socket.gethostname(),
            )
        )
        if self.data.skipped:
            self.emit(ev.Notice(f"skipped {len(self.data.skipped)} unreadable file(s) in {self.data.root}", "warning"))
        for change in self.data.changes:
            self.emit(ev.Notice(change, "warning"))
        if self.resume_notes:
            self.emit(ev.Notice("resumed with " + ", ".join(self.resume_notes)))
            self.resume_notes = []
        self._state(RunState.TRAINING)
        try:
            while self.progress.epoch <= self.config.epochs and not self._patience_ran_out():
                if not self._one_epoch():
                    return RunOutcome.STOPPED
            return self._finish(start)
        except TrainingDiverged as error:
            return self._fail(str(error))
        except CheckpointSaveError as error:
            # The weights and optimizer stay in memory: fix the disk and start again to save and go on.
            return self._fail(f"{error}; training state is kept in memory, fix it and start again (s in the TUI)")
        except torch.OutOfMemoryError:
            message = (
                f"out of memory on {self.device} at batch size {self.config.batch_size}; "
                f"try --batch-size {max(1, self.config.batch_size // 2)} or a smaller --image-size"
            )
        except Exception as error:  # noqa: BLE001 - reported as a Failed event with its traceback, not swallowed
            return self._fail(f"{type(error).__name__}: {error}", traceback.format_exc())
        # After OOM the exception's frames hold the big tensors: free them outside the except block.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self._fail(message)

    def _one_epoch(self) -> bool:
        """Train, validate, keep the best, save last.pt; False when a stop request ended it."""
        epoch, progress = self.progress.epoch, self.progress
        if self.run_dir is not None and getattr(self, "_checkpoints", None) is None:
            # The snapshot's buffers are made while this epoch trains (after a step, when Adam's
            # moments exist), not between two epochs at the first save.
            self._checkpoints = CheckpointWriter()
            self._checkpoints.reserve_after_step(
                self.optimizer, lambda: {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            )
        if not self.train_one_epoch(epoch):
            return False
        result = self.evaluate("val")
        if result is None:
            self._stop(epoch)
            return False
        self._state(RunState.TRAINING)
        if writer := getattr(self, "_checkpoints", None):
            # The previous epoch's files were written while this epoch trained. One that failed is
            # raised here, its best_val_loss put back, before this epoch's result is judged against it.
            writer.wait()
        val_loss, val_acc = result
        totals = progress.totals
        improved = val_loss < progress.best_val_loss
        previous = (progress.best_val_loss, progress.best_epoch)
        if improved:
            progress.best_val_loss, progress.best_epoch = val_loss, epoch
            path = self._save_best(previous)
        ended = (progress.epoch, progress.batch, totals)
        progress.next_epoch()
        try:
            # One snapshot for best.pt and last.pt, written in the background while the next epoch
            # trains. The final epoch waits: nothing is left to overlap, and _finish reads best.pt.
            self.save_last(wait=progress.epoch > self.config.epochs)
        except CheckpointSaveError:
            # Nothing has trained since: a retry judges this epoch again and saves it (best_val_loss
            # was put back by the failed best.pt, if it was that one).
            progress.epoch, progress.batch, progress.totals = ended
            raise
        if improved:
            # Said once the weights are snapshotted, before they are durable ("Saving Model!", as in
            # the tutorial; on the final epoch they are on disk by now). A write that then fails ends
            # the run as Failed, "kept in memory", at the next wait, with best_val_loss put back to
            # what best.pt on disk holds, so that the retry saves a best again.
            self.emit(ev.BestCheckpoint(epoch, previous[0], val_loss, str(path)))
        self.emit(
            ev.EpochEnd(
                epoch,
                self.config.epochs,
                totals.loss,
                totals.accuracy,
                val_loss,
                val_acc,
                totals.seen / max(totals.seconds, 1e-9),
                totals.seconds,
                improved,
            )
        )
        return True

    def _fail(self, message: str, details: str = "") -> RunOutcome:
        self.emit(ev.Failed(message, details))
        self._state(RunState.FAILED)
        return RunOutcome.FAILED

    def _finish(self, start: float) -> RunOutcome:
        """Reload the best weights into a model of their own and report them on data never used to
        pick them. The training model keeps the last weights, which a stop here saves to last.pt."""
        run_path = self.run_dir.path if self.run_dir else self.shared_run_path
        if writer := getattr(self, "_checkpoints", None):
            writer.wait()  # best.pt is read below; under DDP the other ranks read it after the barrier
        if self.ranks.distributed:
            if not weights_agree(self.model, self.device):
                return self._fail("the ranks' weights differ; the DDP run is not consistent")
            self.emit(ev.Notice(f"weights identical on all {self.ranks.world_size} ranks"))
            dist.barrier()  # rank 0 has written best.pt
        best = run_path / "best.pt"
        final_model = self.model
        if best.exists():
            final_model = build_model(self.config.arch, self.model.num_classes, self.model.image_size, self.model.width)
            final_model.load_state_dict(load_checkpoint(best)["model"])
            final_model = final_model.to(self.device, memory_format=self.memory_format)
        split = "test" if self.data is not None and self.data.test is not None else "val"
        # With --test-split 0 this reports on the validation images, as the tutorial did.
        result = self.evaluate(split, checkpoint=best, model=final_model)
        if result is None:
            self._stop(self.progress.epoch)
            return RunOutcome.STOPPED
        self.emit(ev.Finished(self.progress.best_val_loss, result[0], result[1], time.perf_counter() - start))
        self._state(RunState.FINISHED)
        return RunOutcome.FINISHED

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the checkpoint being written, shut down loader workers, release the run directory
        (and leave the DDP process group)."""
        if writer := getattr(self, "_checkpoints", None):
            try:
                writer.wait()  # a run that failed otherwise (NaN, an error) still gets its last save
            except Exception as error:  # noqa: BLE001 - nothing is left to fail: said, not raised
                self.emit(ev.Notice(f"the last checkpoint was not saved: {error}", "warning"))
            writer.release()
        if self.ranks.distributed and dist.is_initialized():
            dist.destroy_process_group()
        for loader in self._loaders.values():
            shut_down(loader)
        self._loaders.clear()
        if self.run_dir is not None:
            self.run_dir.release()
