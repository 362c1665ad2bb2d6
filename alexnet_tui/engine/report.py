"""Evaluation report: loss, accuracy, per-class precision/recall/F1, confusion matrix, confident mistakes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from alexnet_tui.data.images import UNREADABLE, FolderImages
from alexnet_tui.engine.evaluation import mirrored_log_probabilities
from alexnet_tui.engine.tensors import to_model_input


def sample_name(dataset: Dataset, index: int) -> str:
    """A file path where there is one, else the position in the split."""
    if isinstance(dataset, FolderImages):
        return str(dataset.root / dataset.samples[index][0])
    return f"#{index}"


@torch.inference_mode()
def evaluation_report(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    dataset: Dataset,
    class_names: list[str],
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    should_stop: Callable[[], bool] = lambda: False,
    worst: int = 10,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    tta: bool = False,
    limit: int | None = None,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Any] | None:
    """One pass over `batches` (the dataset in order, at most `limit` batches): everything the report
    says. None if stopped. With `tta`, each image's probabilities are averaged with its mirror image's."""
    was_training = model.training
    model.eval()
    probabilities, labels = [], []
    total = len(batches) if hasattr(batches, "__len__") else 0
    total = min(total, limit) if limit else total
    try:
        for images, targets in batches:
            if limit and len(labels) >= limit:
                break
            if should_stop():
                return None
            inputs = to_model_input(images, device, memory_format=memory_format)
            with autocast():
                logits = model(inputs)
                mirrored = model(inputs.flip(3)) if tta else None
            logits = logits.float()
            if mirrored is not None:
                probabilities.append(mirrored_log_probabilities(logits, mirrored).exp())
            else:
                probabilities.append(logits.softmax(1))
            labels.append(targets.to(device))
            on_progress(len(labels), total)
    finally:
        model.train(was_training)
    if not labels:
        return None
    # Everything stays on the device until here: one read-back for the whole pass.
    probs = torch.cat(probabilities).cpu()
    truth = torch.cat(labels).cpu()
    readable = truth != UNREADABLE
    probs, truth, positions = probs[readable], truth[readable], torch.nonzero(readable).flatten()
    # --num-classes may exceed the class folders: the extra outputs get names of their own.
    class_names = list(class_names) + [f"output {i}" for i in range(len(class_names), probs.shape[1])]
    classes = len(class_names)
    predicted = probs.argmax(1)
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), truth).item() if len(truth) else float("nan")
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((truth, predicted), torch.ones_like(truth), accumulate=True)
    per_class = {}
    for index, name in enumerate(class_names):
        hits = confusion[index, index].item()
        predicted_as = confusion[:, index].sum().item()
        actual = confusion[index].sum().item()
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    wrong = torch.nonzero(predicted != truth).flatten()
    confidence = probs[wrong, predicted[wrong]]
    order = confidence.argsort(descending=True)[:worst]
    mistakes = [
        {
            "image": sample_name(dataset, positions[wrong[i]].item()),
            "true": class_names[truth[wrong[i]].item()],
            "predicted": class_names[predicted[wrong[i]].item()],
            "confidence": confidence[i].item(),
        }
        for i in order.tolist()
    ]
    return {
        "tta": tta,
        "images": len(truth),
        "loss": loss,
        "accuracy": (predicted == truth).float().mean().item() if len(truth) else float("nan"),
        "per_class": per_class,
        "class_names": class_names,
        "confusion_matrix": confusion.tolist(),
        "most_confident_mistakes": mistakes,
    }


def format_report(report: dict[str, Any]) -> str:
    names = report["class_names"]
    split = report.get("split", "evaluation")
    width = max(9, *(len(n) for n in names)) + 1
    lines = [
        f"{split} loss: {report['loss']:.5f}, {split} accuracy: {report['accuracy']:.5f} "
        f"({report['images']} images{', each averaged with its mirror image (--tta)' if report.get('tta') else ''})",
        "",
        f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<{width}}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>9}"
        )
    lines += [
        "",
        "confusion matrix (rows: true, columns: predicted)",
        " " * width + "".join(f"{n[:8]:>9}" for n in names),
    ]
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{count:>9}" for count in row))
    if report["most_confident_mistakes"]:
        lines += ["", "most confidently wrong:"]
        for mistake in report["most_confident_mistakes"]:
            lines.append(
                f"  {mistake['confidence']:.3f} {mistake['predicted']} (true {mistake['true']}): {mistake['image']}"
            )
    return "\n".join(lines)
