"""Command line: train (the default, TUI or --no-ui) | summary | download | evaluate | predict | runs | watch."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from alexnet_tui.config import AMP_MODES, CACHE_MODES, TrainConfig, load_toml
from alexnet_tui.errors import UsageError

COMMANDS = ("summary", "download", "evaluate", "predict", "runs", "watch")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def train_parser() -> Parser:
    parser = Parser(
        prog="alexnet-tui",
        description="Train the 2012 AlexNet on an image folder, in a terminal UI or headless. "
        f"Other commands: {', '.join(COMMANDS)} (alexnet-tui COMMAND --help).",
    )
    add = parser.add_argument
    # default=None everywhere: only options the user typed override the TOML file and the checkpoint.
    add("--no-ui", action="store_true", help="run headless: line logs, for nohup, tmux, CI and clusters")
    add("--config", metavar="TOML", help="read settings from a TOML file (keys as below, - or _)")
    add(
        "--data",
        help="image folder with one subfolder per class (or holding PetImages/), 'demo' "
        "for the built-in generated set, or 'cats-vs-dogs' (the downloaded copy; the default)",
    )
    add("--epochs", type=int, help="epochs to train (default 10)")
    add("--batch-size", type=int, help="images per batch (default 32)")
    add("--lr", type=float, help="Adam learning rate (default 1e-4)")
    add("--image-size", type=int, help="input side in pixels (default 227, the tutorial's)")
    add("--num-classes", type=int, help="output classes (default: the number of class folders)")
    add("--val-split", type=float, help="fraction held out from training (default 0.2: an 80/20 split)")
    add(
        "--test-split",
        type=float,
        help="fraction of the held-out images kept for the final report and never "
        "used to pick the checkpoint (default 0.5; 0 reports on the validation images)",
    )
    add("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    add("--workers", type=int, help="data loader processes (default: by CPU count)")
    add("--seed", type=int, help="random seed for the split, shuffling and initial weights (default 42)")
    add("--out", help="run directory (default runs/<timestamp>)")
    add("--resume", metavar="RUN_DIR|last.pt", help="continue a stopped run from its last.pt")
    add("--amp", choices=AMP_MODES, help="mixed precision (default auto: bf16 on CUDA and on CPUs with native bf16)")
    add("--no-channels-last", dest="channels_last", action="store_false", default=None, help="keep NCHW memory layout")
    add("--cache", choices=CACHE_MODES, help="keep decoded, resized images in a file cache (default disk)")
    add("--limit-batches", type=int, help="at most this many batches per epoch and evaluation (quick tries)")
    add(
        "--no-stop-on-nan",
        dest="stop_on_nan",
        action="store_false",
        default=None,
        help="keep training when the loss becomes NaN or inf",
    )
    add("--demo-size", type=int, help="images in the demo set (default 600)")
    return parser


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- the resumed checkpoint's settings <- the TOML file <- options typed on the command line."""
    values: dict[str, Any] = {}
    if args.resume:
        from alexnet_tui.engine.checkpoint import load_checkpoint

        values.update(load_checkpoint(args.resume)["config"])
        values["out"] = None  # the run continues in the checkpoint's own folder unless --out says otherwise
    if args.config:
        values.update(load_toml(args.config))
    typed = {key: value for key, value in vars(args).items() if value is not None and key not in ("no_ui", "config")}
    values.update(typed)
    return TrainConfig.from_dict(values).validate()


def summary_command(argv: Sequence[str]) -> int:
    parser = Parser(prog="alexnet-tui summary", description="Print torchsummary's table for the model.")
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    args = parser.parse_args(argv)
    TrainConfig(num_classes=args.num_classes, image_size=args.image_size).validate()
    from alexnet_tui.engine.device import resolve_device
    from alexnet_tui.model import AlexNet, summary_text

    device = resolve_device(args.device)
    print(summary_text(AlexNet(args.num_classes, args.image_size).to(device), device), end="")
    return 0


def train_command(argv: Sequence[str]) -> int:
    args = train_parser().parse_args(argv)
    config = build_config(args)
    headless = args.no_ui
    if not headless and not (sys.stdout.isatty() and sys.stdin.isatty()):
        print("alexnet-tui: not a terminal, so running headless (pass --no-ui to say so)", file=sys.stderr)
        headless = True
    if headless:
        from alexnet_tui.headless import run_headless

        return run_headless(config)
    from alexnet_tui.ui.app import run_app

    return run_app(config)


def watch_command(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="alexnet-tui watch", description="Follow a run started elsewhere, read-only; x asks it to stop."
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise UsageError(f"{run_dir}: no metrics.jsonl here; give a run directory (see alexnet-tui runs)")
    if not sys.stdout.isatty():
        raise UsageError("watch needs a terminal; read RUN_DIR/metrics.jsonl or train.log instead")
    config = TrainConfig()
    if (run_dir / "config.toml").is_file():
        config = TrainConfig.from_dict(load_toml(run_dir / "config.toml"))
    from alexnet_tui.ui.app import run_app

    return run_app(config, watch=run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "summary":
            return summary_command(argv[1:])
        if argv and argv[0] in ("evaluate", "predict"):
            from alexnet_tui import inference

            return getattr(inference, f"{argv[0]}_command")(argv[1:])
        if argv and argv[0] == "runs":
            from alexnet_tui.runs import runs_command

            return runs_command(argv[1:])
        if argv and argv[0] == "watch":
            return watch_command(argv[1:])
        if argv and argv[0] == "download":
            from alexnet_tui.download import download_command

            return download_command(argv[1:])
        return train_command(argv)
    except UsageError as error:
        print(f"alexnet-tui: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("alexnet-tui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
