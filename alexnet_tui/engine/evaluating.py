"""Evaluation passes: the validation that picks the checkpoint, the final report on best.pt, and the
full report `e` asks for. Mixed into the Trainer."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import CheckpointError, load_checkpoint, load_weights
from alexnet_tui.engine.distributed import all_reduce_sum, broadcast_weights, rank0_says, weights_agree
from alexnet_tui.engine.evaluation import loss_and_accuracy
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.engine.training_state import RunOutcome
from alexnet_tui.model import build_model
from alexnet_tui.safe_files import replace_text

if TYPE_CHECKING:
    from alexnet_tui.engine.trainer import Trainer

    Base = Trainer
else:
    Base = object

RunState = ev.RunState


class Evaluations(Base):
    def _finish(self, start: float) -> RunOutcome:
        """Reload the best weights into a model of their own and report them on data never used to
        pick them. The training model keeps the last weights, which a stop here saves to last.pt."""
        run_path = self.run_dir.path if self.run_dir else self.shared_run_path
        if writer := self._checkpoints:
            writer.wait()  # best.pt is read below
        if self.ranks.distributed:
            if not weights_agree(self.model, self.device):
                return self._fail("the ranks' weights differ; the DDP run is not consistent")
            self.emit(ev.Notice(f"weights identical on all {self.ranks.world_size} ranks"))
        best = run_path / "best.pt"
        if not math.isfinite(self.progress.best_val_loss):  # the same on every rank: reduced
            # NaN in validation only (--no-stop-on-nan): no epoch was ever better, so no best.pt exists
            # and the run would have ended with a report naming one.
            return self._fail(
                f"val_loss was never a finite number, so no best.pt was saved; last.pt holds the last "
                f"weights; try a lower --lr (now {self.config.lr:g})"
            )
        final_model = self._best_model(best)
        split = "test" if self.data is not None and self.data.test is not None else "val"
        # With --test-split 0 this reports on the validation images, as the tutorial did.
        if self.ranks.distributed:  # each rank holds a share of the images: the sums are reduced
            result = self.evaluate(split, checkpoint=best, model=final_model)
        else:  # one pass gives the figures and the full report (evaluation-SPLIT.json, the Report tab)
            written = self._write_report(split, final_model, best)
            result = None if written is None else (written[1]["loss"], written[1]["accuracy"])
        if result is None:
            self._stop(self.progress.epoch)
            return RunOutcome.STOPPED
        self._last_figures()
        self.emit(ev.Finished(self.progress.best_val_loss, result[0], result[1], time.perf_counter() - start))
        self._state(RunState.FINISHED)
        return RunOutcome.FINISHED

    def _best_model(self, best: Path) -> nn.Module:
        """best.pt's weights in a model of their own (the training model if no best was saved). Under
        DDP rank 0 reads the file and sends the weights: the other ranks may not see its folder (a
        node-local --out), and each of them reports its share of the images. A best.pt that cannot be
        read fails every rank alike, not rank 0 alone while the others wait for its weights."""
        model = build_model(self.config.arch, self.model.num_classes, self.model.image_size, self.model.width)
        found, problem = False, ""
        if self.ranks.main and best.exists():
            try:
                load_weights(model, load_checkpoint(best))
                found = True
            except CheckpointError as error:
                problem = str(error)
        if self.ranks.distributed:
            found, problem = rank0_says((found, problem))
        if problem:
            raise CheckpointError(problem)
        if not found:
            return self.model
        model = model.to(self.device)
        if self.ranks.distributed:
            broadcast_weights(model)
        return model.to(memory_format=self.memory_format)

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
        written = self._write_report(split)
        if written is None:
            self.control.stop_served()  # x cut the report short; the next start must not stop at once
        if self.progress.epoch > self.config.epochs or self._patience_ran_out(say=False):
            self._state(RunState.FINISHED)
        else:
            self._state(RunState.STOPPED if self.position().started else RunState.IDLE)
        return None if written is None else written[0]

    def _write_report(
        self, split: str, model: nn.Module | None = None, checkpoint: Path | None = None
    ) -> tuple[Path, dict[str, Any]] | None:
        """One pass: loss, accuracy, per-class metrics, confusion and the most confident mistakes,
        into RUN_DIR/evaluation-SPLIT.json. What `e` asks for (the training model), or the final
        report on `checkpoint`'s weights in `model` (with --tta if asked). None if a stop cut it short."""
        from alexnet_tui.engine.report import evaluation_report, format_report

        assert self.data is not None and self.run_dir is not None
        self._state(RunState.EVALUATING)
        loader = self._loader(split)
        limit = self.config.limit_batches
        tta = self.config.tta and checkpoint is not None
        task = "evaluating" if checkpoint is not None else "evaluation report"  # the final report, or e's
        if tta:
            self.emit(ev.Notice("--tta: each image's prediction is averaged with its mirror image's"))
        self.emit(ev.EvaluationStarted(split, min(len(loader), limit) if limit else len(loader)))
        report = evaluation_report(
            model or self.model,
            loader,
            self._dataset(split),
            self.data.class_names,
            self.device,
            self.memory_format,
            self._stop_during_evaluation,
            on_progress=ev.ProgressThrottle(self.emit, f"{task} on {split}"),
            tta=tta,
            limit=limit,
            autocast=self._autocast,
        )
        if report is None:
            return None
        report.update(split=split, epoch=self.progress.epoch, batch=self.progress.batch, tta=tta)
        if checkpoint is not None:
            report["checkpoint"] = str(checkpoint)
        if self.config.data == "demo":  # the gallery draws a mistake again from these (no files)
            from alexnet_tui.data.demo import DEMO_SETTINGS, demo_index

            report["demo"] = {key: getattr(self.config, key) for key in DEMO_SETTINGS}
            for mistake in report["most_confident_mistakes"]:  # viewers draw it without torch's split
                mistake["demo_index"] = demo_index(mistake["image"], split, report["demo"])
        path = self.run_dir.path / f"evaluation-{split}.json"
        replace_text(path, json.dumps(report, indent=2))  # through no link another user planted
        checkpoint_name = str(checkpoint) if checkpoint else None
        self.emit(ev.EvaluationEnd(split, report["loss"], report["accuracy"], report["images"], checkpoint_name,
                                   checkpoint is None))  # fmt: skip
        text = format_report(report)
        if checkpoint is not None:  # the final report: its loss line is EvaluationEnd's, said just before
            text = f"{split} split, per class:\n" + text.split("\n", 2)[2]
        self.emit(ev.Notice(text + f"\nreport written to {path}"))
        self.emit(ev.ReportWritten(split, str(path)))
        return path, report
