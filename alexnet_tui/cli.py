"""Command line: train (the default, TUI or --no-ui) | summary | download | evaluate | predict | runs | watch."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from alexnet_tui.config import ARCHS, TrainConfig, field_type, flag, load_toml, shown_default
from alexnet_tui.errors import UsageError
from alexnet_tui.paths import fresh_line


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
    recipe = parser.add_argument_group("beyond the tutorial's recipe (all off by default)")
    for item in fields(TrainConfig):  # each option as config.py declares it, once
        meta, default = item.metadata, item.default
        where = recipe if meta["beyond"] else parser
        text = meta["help"] + (f" (default {shown})" if (shown := shown_default(item.name)) else "")
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            where.add_argument(flag(item.name), dest=item.name, action=action, default=None, help=text)
        else:
            where.add_argument(flag(item.name), dest=item.name, type=field_type(item.name), choices=meta["choices"],
                               metavar=meta["metavar"], help=text)  # fmt: skip
    return parser


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- the resumed checkpoint's settings <- the TOML file <- options typed on the command line."""
    values: dict[str, Any] = {}
    saved: dict[str, Any] | None = None
    if args.resume:
        from alexnet_tui.engine.checkpoint import load_checkpoint

        saved = load_checkpoint(args.resume)["config"]
        values.update(saved)
        values["out"] = None  # the run continues in the checkpoint's own folder unless --out says otherwise
    if args.config:
        values.update(load_toml(args.config))
    typed = {key: value for key, value in vars(args).items() if value is not None and key not in ("no_ui", "config")}
    values.update(typed)
    if values.get("weights"):  # config.toml then names the file from anywhere (a missing one is said in prepare)
        values["weights"] = str(Path(values["weights"]).expanduser().absolute())
    config = TrainConfig.from_dict(values)
    if saved is not None:  # `--resume RUN --arch tutorial`: say that the run's arch cannot change, before
        from alexnet_tui.engine.training_state import resume_changes  # what the mix of both would break

        resume_changes(saved, config)
    return config.validate()


def summary_command(argv: Sequence[str]) -> int:
    parser = Parser(prog="alexnet-tui summary", description="Print torchsummary's table for the model.")
    parser.add_argument("--num-classes", type=int, help="default 2")
    parser.add_argument("--arch", choices=ARCHS, help="default tutorial")
    parser.add_argument("--image-size", type=int, help="default 227 (tutorial) or 224 (torchvision)")
    parser.add_argument("--width", type=float, help="fraction of the tutorial's widths (default 1)")
    parser.add_argument(
        "--checkpoint", metavar="RUN_DIR|FILE", help="the network a run trained (its arch, classes, size, frozen part)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    args = parser.parse_args(argv)
    from alexnet_tui.engine.device import resolve_device
    from alexnet_tui.engine.recipe import freeze
    from alexnet_tui.model import build_model, summary_text

    if args.checkpoint:
        from alexnet_tui.engine.checkpoint import load_checkpoint
        from alexnet_tui.inference import checkpoint_network, checkpoint_path

        names = ("num_classes", "arch", "image_size", "width")
        given = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--checkpoint gives the network; leave out {', '.join(given)}")
        payload = load_checkpoint(checkpoint_path(args.checkpoint))
        model = checkpoint_network(payload)
        freeze(model, payload.get("config", {}).get("freeze", "none"))  # frozen features: non-trainable
    else:
        config = TrainConfig(
            num_classes=2 if args.num_classes is None else args.num_classes,
            image_size=args.image_size,
            width=1.0 if args.width is None else args.width,
            arch=args.arch or "tutorial",
        )
        config.validate()
        assert config.num_classes is not None and config.image_size is not None
        model = build_model(config.arch, config.num_classes, config.image_size, config.width)
    device = resolve_device(args.device)
    print(summary_text(model.to(device), device), end="")
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
    from alexnet_tui.ui.launch import run_app

    return run_app(config)


def resolve_run(given: str | None) -> Path:
    """RUN_DIR as given, or the newest live run under ./runs."""
    from alexnet_tui.engine.remote import newest_live_run

    run_dir = Path(given) if given else newest_live_run(Path("runs"))
    if run_dir is None:
        raise UsageError("no live run under ./runs; give RUN_DIR (alexnet-tui runs lists them)")
    if not (run_dir / "metrics.jsonl").is_file():
        raise UsageError(f"{run_dir}: no metrics.jsonl here; give a run directory (see alexnet-tui runs)")
    return run_dir


def open_run_screen(run_dir: Path, read_only: bool) -> int:
    """The training screen on a run another process is running (read-only for `watch`)."""
    from alexnet_tui.engine.remote import RemoteControl, describe_owner, run_is_live

    if not read_only:
        if not run_is_live(run_dir):
            raise UsageError(
                f"{run_dir}: the run is not running; look at it with alexnet-tui watch {run_dir} "
                f"or go on with alexnet-tui --no-ui --resume {run_dir}"
            )
        RemoteControl(run_dir).check_writable()
    # textual-serve runs this command per browser tab with its web driver over pipes: no tty there.
    if not sys.stdout.isatty() and not os.environ.get("TEXTUAL_DRIVER"):
        raise UsageError("attach needs a terminal; read RUN_DIR/metrics.jsonl or train.log instead")
    config = TrainConfig()
    if (run_dir / "config.toml").is_file():
        config = TrainConfig.from_dict(load_toml(run_dir / "config.toml"))
    from alexnet_tui.ui.launch import run_app

    if not read_only:
        print(f"attaching to {run_dir} ({describe_owner(run_dir)})", file=sys.stderr)
    return run_app(config, attach=run_dir, read_only=read_only)


def attach_command(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="alexnet-tui attach",
        description="The training screen on a run started elsewhere (TUI, --no-ui, torchrun, another host): "
        "p pause/resume, e evaluate, x stop, q leaves the run going.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="default: the newest live run under ./runs")
    parser.add_argument("--read-only", action="store_true", help="follow only, as `watch` does")
    args = parser.parse_args(argv)
    return open_run_screen(resolve_run(args.run_dir), args.read_only)


def watch_command(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="alexnet-tui watch", description="Follow a run started elsewhere, read-only; x asks it to stop."
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="default: the newest live run under ./runs")
    args = parser.parse_args(argv)
    return open_run_screen(resolve_run(args.run_dir), read_only=True)


def serve_command(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="alexnet-tui serve",
        description="The attached screen in a web browser (textual-serve); every tab views the same run.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="default: the newest live run under ./runs")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: use ssh -L)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    run_dir = resolve_run(args.run_dir).resolve()
    from alexnet_tui.serve import serve

    return serve(run_dir, args.host, args.port)


def evaluate_command(argv: Sequence[str]) -> int:
    parser = Parser(prog="alexnet-tui evaluate", description="Evaluate a checkpoint: metrics, confusion, mistakes.")
    parser.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a run directory (its best.pt)")
    parser.add_argument("--data", help="image folder or demo (default: the data the checkpoint was trained on)")
    parser.add_argument("--split", choices=("val", "test"), help="default: test when the run kept one, else val")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=positive_number, default=64)
    parser.add_argument("--tta", action="store_true", help="average each image's prediction with its mirror image's")
    parser.add_argument("--html", metavar="FILE", type=Path, help="also write the report as one self-contained page")
    args = parser.parse_args(argv)
    from alexnet_tui.inference import evaluate_checkpoint

    return evaluate_checkpoint(
        args.checkpoint, args.data, args.split, args.device, args.batch_size, args.tta, args.html
    )


def predict_command(argv: Sequence[str]) -> int:
    parser = Parser(prog="alexnet-tui predict", description="Top classes for each image, with probabilities.")
    parser.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a run directory (its best.pt)")
    parser.add_argument("--top", type=positive_number, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    args = parser.parse_args(argv)
    from alexnet_tui.inference import predict_images

    return predict_images(args.checkpoint, args.images, args.top, args.device)


def runs_command(argv: Sequence[str]) -> int:
    parser = Parser(prog="alexnet-tui runs", description="List runs: state, epochs, best val_loss, device, start.")
    parser.add_argument("folder", nargs="?", default="runs", help="folder holding run directories (default runs)")
    parser.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="the options that differ and the figures")
    args = parser.parse_args(argv)
    from alexnet_tui.runs import compare_runs, list_runs

    if args.compare:
        return compare_runs([Path(run) for run in args.compare])
    return list_runs(Path(args.folder))


def positive_number(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return int(text)


def whole_number(text: str) -> int:
    """argparse type: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def download_command(argv: Sequence[str]) -> int:
    from alexnet_tui.download import DEFAULT_URL, RETRIES, download_dataset

    parser = Parser(prog="alexnet-tui download", description="Fetch and unpack Microsoft's Cats vs Dogs zip.")
    parser.add_argument("--url", default=DEFAULT_URL, help="where to fetch from (http, https or file://)")
    parser.add_argument(
        "--dest", type=Path, default=None, help="a new or empty folder to unpack into (default: the cache)"
    )
    parser.add_argument("--sha256", help="expected checksum of the zip")
    parser.add_argument(
        "--retries",
        type=whole_number,
        default=RETRIES,
        help=f"how often to retry a cut or stalled download, resuming where it stopped (default {RETRIES})",
    )
    args = parser.parse_args(argv)
    return download_dataset(args.url, args.dest, args.sha256, args.retries)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "summary": summary_command,
    "download": download_command,
    "evaluate": evaluate_command,
    "predict": predict_command,
    "runs": runs_command,
    "watch": watch_command,
    "attach": attach_command,
    "serve": serve_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return train_command(argv)
    except UsageError as error:
        print(f"{fresh_line(sys.stderr)}alexnet-tui: error: {error}", file=sys.stderr)  # over a "loading ..." line
        return error.exit_code
    except KeyboardInterrupt:
        print("alexnet-tui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
