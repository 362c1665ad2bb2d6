"""`alexnet-tui evaluate` and `alexnet-tui predict`: use a saved checkpoint on images.

torch is imported inside the functions, after a first line on stderr: importing it takes seconds on a
small machine, and a command that shows nothing for that long looks hung."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexnet_tui.config import TrainConfig
from alexnet_tui.errors import UsageError
from alexnet_tui.safe_files import replace_text

if TYPE_CHECKING:
    import torch


def checkpoint_path(given: str) -> Path:
    """A run directory means its best.pt: that is the model worth evaluating."""
    path = Path(given).expanduser()
    return path / "best.pt" if path.is_dir() else path


def say_loading(path: Path) -> None:
    """The first thing a command using a checkpoint says, before the seconds torch takes to import:
    on a terminal only, on a line what follows writes over (in a log it is noise, and an error stays
    one line)."""
    if sys.stderr.isatty():
        print(f"loading {path} ...", end="\r", file=sys.stderr, flush=True)


def done_loading() -> None:
    if sys.stderr.isatty():
        print("\x1b[K", end="", file=sys.stderr, flush=True)  # the loading line goes


def checkpoint_network(payload: dict[str, Any]) -> torch.nn.Module:
    """The checkpoint's network (its --arch, classes, size and width), with fresh weights."""
    from alexnet_tui.engine.checkpoint import checkpoint_arch
    from alexnet_tui.model import build_model

    arch, width = checkpoint_arch(payload), payload.get("width", 1.0)
    return build_model(arch, payload["num_classes"], payload["image_size"], width)


def model_from_checkpoint(payload: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The checkpoint's network with its weights, for inference."""
    from alexnet_tui.engine.checkpoint import load_weights

    model = checkpoint_network(payload)
    load_weights(model, payload)  # strict: leftover or missing keys are refused
    return model.to(device).eval()


def evaluate_checkpoint(
    checkpoint: str,
    data: str | None,
    split: str | None,
    device_name: str,
    batch_size: int,
    tta: bool = False,
    html: Path | None = None,
) -> int:
    """Print the evaluation report of a checkpoint on its data (or `data`) and save it beside it
    (and as an HTML page at `html`); with `tta`, each image's prediction is averaged with its
    mirror image's."""
    path = checkpoint_path(checkpoint)
    say_loading(path)
    from torch.utils.data import DataLoader

    from alexnet_tui.data.loading import load_data
    from alexnet_tui.engine.checkpoint import check_compatible, checkpoint_arch, load_checkpoint
    from alexnet_tui.engine.device import resolve_device
    from alexnet_tui.engine.report import evaluation_report, format_report

    payload = load_checkpoint(path)
    done_loading()
    values = dict(payload["config"], resume=None, out=None)
    if data:
        values["data"] = data
    config = TrainConfig.from_dict(values).validate()
    device = resolve_device(device_name)
    # The run's own split, unless another --data is given: then the seed splits that data.
    bundle = load_data(config, None if data else payload.get("split"))
    num_classes = payload["config"].get("num_classes") or len(bundle.class_names)
    check_compatible(
        payload,
        num_classes,
        payload["image_size"],
        bundle.class_names,
        payload.get("width", 1.0),
        checkpoint_arch(payload),
    )
    split = split or ("test" if bundle.test is not None else "val")
    dataset = bundle.test if split == "test" else bundle.val
    if dataset is None:
        raise UsageError(f"this data has no {split} split (the run used --test-split 0); use --split val")
    model = model_from_checkpoint(payload, device)
    loader = DataLoader(dataset, batch_size=batch_size)
    report = evaluation_report(model, loader, dataset, bundle.class_names, device, tta=tta)
    if report is None:
        raise UsageError(f"the {split} split of {config.data} is empty")
    report.update(checkpoint=str(path), data=config.data, split=split)
    print(format_report(report))
    target = path.parent / f"evaluation-{split}.json"
    try:
        replace_text(target, json.dumps(report, indent=2))  # through no link another user planted
        print(f"\nreport written to {target}")
    except OSError as error:
        print(f"alexnet-tui: could not write {target} ({error.strerror})", file=sys.stderr)
    if html is not None:
        from alexnet_tui.report_html import write_html

        try:
            print(f"HTML report written to {write_html(report, html)}")
        except OSError as error:
            raise UsageError(f"--html {html}: cannot write it ({error.strerror})") from None
    return 0


def predict_images(checkpoint: str, images: list[str], top: int, device_name: str) -> int:
    """Print each image's top classes; exit 1 if any image could not be read."""
    path = checkpoint_path(checkpoint)
    say_loading(path)
    from alexnet_tui.engine.checkpoint import load_checkpoint
    from alexnet_tui.engine.device import resolve_device

    payload = load_checkpoint(path)
    device = resolve_device(device_name)
    model = model_from_checkpoint(payload, device)
    done_loading()
    failures = 0
    for image in images:
        line, ok = predict_image(model, payload, image, top, device)
        print(line, file=sys.stdout if ok else sys.stderr)
        failures += not ok
    return 1 if failures else 0


def predict_image(
    model: torch.nn.Module, payload: dict[str, Any], image: str, top: int, device: torch.device
) -> tuple[str, bool]:
    """One line for one image: its top classes with probabilities, or why it could not be read."""
    import torch
    from PIL import Image

    from alexnet_tui.data.images import eval_variant, load_resized
    from alexnet_tui.engine.tensors import to_model_input

    try:
        # The geometry the run evaluated with: the tutorial's, or the ImageNet weights' (--pretrained).
        pretrained = bool(payload.get("config", {}).get("pretrained"))
        pixels = load_resized(image, payload["image_size"], eval_variant(pretrained), upright=True)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = getattr(error, "strerror", None) or str(error).split("\n")[0]
        return f"{image}: cannot read it as an image ({reason})", False
    names = payload["class_names"]
    with torch.inference_mode():
        probabilities = model(to_model_input(pixels[None], device)).float().softmax(1)[0].cpu()
    values, indices = probabilities.topk(min(top, len(names)))
    ranked = ", ".join(f"{names[i]} {p:.3f}" for p, i in zip(values.tolist(), indices.tolist(), strict=True))
    return f"{image}: {ranked}", True
