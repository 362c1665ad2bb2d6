"""Evaluation passes over a prepared run, in torchvision's style (functions of the run's state): the
validation that picks the checkpoint, the final report on best.pt, and the full report `e` asks for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import CheckpointError, load_checkpoint, load_weights
from alexnet_tui.engine.distributed import all_reduce_sum, broadcast_weights, rank0_says
from alexnet_tui.engine.evaluation import loss_and_accuracy
from alexnet_tui.engine.prepared import PreparedRun
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.model import build_model
from alexnet_tui.safe_files import replace_text

Emit = Callable[[ev.Event], None]
StopNow = Callable[[], bool]  # asked between batches: a stop request cuts the pass short
TTA_NOTICE = "--tta: each image's prediction is averaged with its mirror image's"


def evaluate(
    run: PreparedRun,
    split: str,
    emit: Emit,
    stop_now: StopNow,
    checkpoint: Path | None = None,
    model: nn.Module | None = None,
    requested: bool = False,
) -> tuple[float, float] | None:
    """Loss and accuracy on a split (every rank's share summed under DDP); None if a stop cut it
    short. `checkpoint` names the weights being reported (the final evaluation of best.pt, in
    `model`), with --tta if asked."""
    loader = run.loader(split)
    tta = run.config.tta and checkpoint is not None
    emit(ev.StateChanged(ev.RunState.EVALUATING))
    if tta:
        emit(ev.Notice(TTA_NOTICE))
    emit(ev.EvaluationStarted(split, run.batches(split)))
    sums = loss_and_accuracy(
        model or run.model,
        loader,
        run.batches(split),
        run.eval_criterion,
        lambda images: to_model_input(images, run.device, None, run.memory_format),
        run.autocast,
        stop_now,
        ev.ProgressThrottle(emit, f"evaluating on {split}"),
        tta=tta,
    )
    if sums is None:
        return None
    if run.ranks.distributed:
        sums = all_reduce_sum(sums)
    total_loss, total_hits, total = sums.tolist()  # one read-back for the whole pass
    loss, acc = total_loss / max(total, 1), total_hits / max(total, 1)
    emit(ev.EvaluationEnd(split, loss, acc, int(total), str(checkpoint) if checkpoint else None, requested))
    return loss, acc


def write_report(
    run: PreparedRun,
    split: str,
    emit: Emit,
    stop_now: StopNow,
    model: nn.Module | None = None,
    checkpoint: Path | None = None,
) -> tuple[Path, dict[str, Any]] | None:
    """One pass: loss, accuracy, per-class metrics, confusion and the most confident mistakes, into
    RUN_DIR/evaluation-SPLIT.json. What `e` asks for (the training model), or the final report on
    `checkpoint`'s weights in `model` (with --tta if asked). None if a stop cut it short. Rank 0 of
    one process only: the report is not sharded."""
    from alexnet_tui.engine.report import evaluation_report, format_report

    assert run.run_dir is not None
    emit(ev.StateChanged(ev.RunState.EVALUATING))
    tta = run.config.tta and checkpoint is not None
    task = "evaluating" if checkpoint is not None else "evaluation report"  # the final report, or e's
    if tta:
        emit(ev.Notice(TTA_NOTICE))
    emit(ev.EvaluationStarted(split, run.batches(split)))
    report = evaluation_report(
        model or run.model,
        run.loader(split),
        run.dataset(split),
        run.data.class_names,
        run.device,
        run.memory_format,
        stop_now,
        on_progress=ev.ProgressThrottle(emit, f"{task} on {split}"),
        tta=tta,
        limit=run.config.limit_batches,
        autocast=run.autocast,
    )
    if report is None:
        return None
    report.update(split=split, epoch=run.progress.epoch, batch=run.progress.batch, tta=tta)
    if checkpoint is not None:
        report["checkpoint"] = str(checkpoint)
    if run.config.data == "demo":  # the gallery draws a mistake again from these (no files)
        from alexnet_tui.data.demo import DEMO_SETTINGS, demo_index

        report["demo"] = {key: getattr(run.config, key) for key in DEMO_SETTINGS}
        for mistake in report["most_confident_mistakes"]:  # viewers draw it without torch's split
            mistake["demo_index"] = demo_index(mistake["image"], split, report["demo"])
    path = run.run_dir.path / f"evaluation-{split}.json"
    replace_text(path, json.dumps(report, indent=2))  # through no link another user planted
    checkpoint_name = str(checkpoint) if checkpoint else None
    emit(ev.EvaluationEnd(split, report["loss"], report["accuracy"], report["images"], checkpoint_name,
                          checkpoint is None))  # fmt: skip
    text = format_report(report)
    if checkpoint is not None:  # the final report: its loss line is EvaluationEnd's, said just before
        text = f"{split} split, per class:\n" + text.split("\n", 2)[2]
    emit(ev.Notice(text + f"\nreport written to {path}"))
    emit(ev.ReportWritten(split, str(path)))
    return path, report


def requested_evaluation(run: PreparedRun, emit: Emit, stop_now: StopNow) -> None:
    """`e` mid-run: the full report; under DDP (where the report is not sharded) loss and accuracy."""
    if run.ranks.distributed:
        evaluate(run, "val", emit, stop_now, requested=True)
    else:
        write_report(run, "val", emit, stop_now)


def final_evaluation(run: PreparedRun, best: Path, emit: Emit, stop_now: StopNow) -> tuple[float, float] | None:
    """best.pt's weights reported on data never used to pick them (the test split; --test-split 0:
    the validation images, as the tutorial did). None if a stop cut it short."""
    model = best_model(run, best)
    split = "test" if run.data.test is not None else "val"
    if run.ranks.distributed:  # each rank holds a share of the images: the sums are reduced
        return evaluate(run, split, emit, stop_now, checkpoint=best, model=model)
    written = write_report(run, split, emit, stop_now, model, best)  # the figures and the Report tab's file
    return None if written is None else (written[1]["loss"], written[1]["accuracy"])


def best_model(run: PreparedRun, best: Path) -> nn.Module:
    """best.pt's weights in a model of their own (the training model if no best was saved). Under
    DDP rank 0 reads the file and sends the weights: the other ranks may not see its folder (a
    node-local --out), and each of them reports its share of the images. A best.pt that cannot be
    read fails every rank alike, not rank 0 alone while the others wait for its weights."""
    plain = run.model
    model = build_model(run.config.arch, plain.num_classes, plain.image_size, plain.width)
    found, problem = False, ""
    if run.ranks.main and best.exists():
        try:
            load_weights(model, load_checkpoint(best))
            found = True
        except CheckpointError as error:
            problem = str(error)
    if run.ranks.distributed:
        found, problem = rank0_says((found, problem))
    if problem:
        raise CheckpointError(problem)
    if not found:
        return run.model
    model = model.to(run.device)
    if run.ranks.distributed:
        broadcast_weights(model)
    return model.to(memory_format=run.memory_format)
