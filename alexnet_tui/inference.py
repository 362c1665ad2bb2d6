"""`alexnet-tui evaluate` and `alexnet-tui predict`: use a saved checkpoint on images."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from alexnet_tui.config import TrainConfig
from alexnet_tui.engine.checkpoint import check_compatible, load_checkpoint
from alexnet_tui.engine.device import resolve_device
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.errors import UsageError
from alexnet_tui.model import AlexNet


def checkpoint_path(given: str) -> Path:
    """A run directory means its best.pt: that is the model worth evaluating."""
    path = Path(given).expanduser()
    return path / "best.pt" if path.is_dir() else path


def model_from_checkpoint(payload: dict[str, Any], device: torch.device) -> AlexNet:
    model = AlexNet(payload["num_classes"], payload["image_size"])
    model.load_state_dict(payload["model"])  # strict: leftover or missing keys are refused
    return model.to(device).eval()


def evaluate_command(argv: Sequence[str]) -> int:
    from alexnet_tui.cli import Parser
    from alexnet_tui.data import load_data
    from alexnet_tui.engine.report import evaluation_report, format_report

    parser = Parser(prog="alexnet-tui evaluate", description="Evaluate a checkpoint: metrics, confusion, mistakes.")
    parser.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a run directory (its best.pt)")
    parser.add_argument("--data", help="image folder or demo (default: the data the checkpoint was trained on)")
    parser.add_argument("--split", choices=("val", "test"), help="default: test when the run kept one, else val")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    path = checkpoint_path(args.checkpoint)
    payload = load_checkpoint(path)
    values = dict(payload["config"], resume=None, out=None)
    if args.data:
        values["data"] = args.data
    config = TrainConfig.from_dict(values).validate()
    device = resolve_device(args.device)
    bundle = load_data(config)
    num_classes = payload["config"].get("num_classes") or len(bundle.class_names)
    check_compatible(payload, num_classes, payload["image_size"], bundle.class_names)
    split = args.split or ("test" if bundle.test is not None else "val")
    dataset = bundle.test if split == "test" else bundle.val
    if dataset is None:
        raise UsageError(f"this data has no {split} split (the run used --test-split 0); use --split val")
    report = evaluation_report(
        model_from_checkpoint(payload, device), dataset, bundle.class_names, device, args.batch_size
    )
    report.update(checkpoint=str(path), data=config.data, split=split)
    print(format_report(report))
    target = path.parent / f"evaluation-{split}.json"
    try:
        target.write_text(json.dumps(report, indent=2))
        print(f"\nreport written to {target}")
    except OSError as error:
        print(f"alexnet-tui: could not write {target} ({error.strerror})", file=sys.stderr)
    return 0


def predict_command(argv: Sequence[str]) -> int:
    from alexnet_tui.cli import Parser

    parser = Parser(prog="alexnet-tui predict", description="Top classes for each image, with probabilities.")
    parser.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a run directory (its best.pt)")
    parser.add_argument("--top", type=int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    args = parser.parse_args(argv)
    payload = load_checkpoint(checkpoint_path(args.checkpoint))
    device = resolve_device(args.device)
    model = model_from_checkpoint(payload, device)
    failures = 0
    for image in args.images:
        line, ok = predict_image(model, payload, image, args.top, device)
        print(line, file=sys.stdout if ok else sys.stderr)
        failures += not ok
    return 1 if failures else 0


def predict_image(
    model: AlexNet, payload: dict[str, Any], image: str, top: int, device: torch.device
) -> tuple[str, bool]:
    """One line for one image: its top classes with probabilities, or why it could not be read."""
    from alexnet_tui.data.images import load_resized

    try:
        pixels = load_resized(image, payload["image_size"], "eval")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = getattr(error, "strerror", None) or str(error).split("\n")[0]
        return f"{image}: cannot read it as an image ({reason})", False
    names = payload["class_names"]
    with torch.inference_mode():
        probabilities = model(to_model_input(pixels[None], device)).float().softmax(1)[0].cpu()
    values, indices = probabilities.topk(min(top, len(names)))
    ranked = ", ".join(f"{names[i]} {p:.3f}" for p, i in zip(values.tolist(), indices.tolist(), strict=True))
    return f"{image}: {ranked}", True
