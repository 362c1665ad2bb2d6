"""The training configuration: one dataclass, validated once, read from and written to TOML."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from alexnet_tui.errors import UsageError

AMP_MODES = ("auto", "bf16", "fp16", "off")
CACHE_MODES = ("disk", "off")
ARCHS = ("tutorial", "torchvision")  # as model.ARCHS (config stays free of torch imports)
FREEZE_MODES = ("none", "features")
SCHEDULES = ("none", "cosine", "onecycle")


DEMO_IMAGE_SIZE = 96  # the demo's textures need no more; ten epochs then take about two minutes on two cores


def default_image_size(data: str, arch: str) -> int:
    """The architecture's own input side (227 tutorial, 224 torchvision); the demo set's is smaller."""
    if arch == "torchvision":
        return 224
    return DEMO_IMAGE_SIZE if data == "demo" else 227


def option(
    default: Any,
    help: str,  # noqa: A002 - argparse's word
    *,
    doc: str | None = None,
    shown_default: str | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    beyond: bool = False,
    recipe: bool = False,
    identity: bool = False,
    form: str | None = None,
) -> Any:
    """A TrainConfig field and everything said of it, once: the command line (cli.train_parser), the
    docs table (options_table; docs/options.md holds it, a test keeps it so), the recipe line
    (`recipe`: said when not the default), a resume's refusals (`identity`: changing it makes another
    run), the TUI's form (`form`: its label) and `beyond` the tutorial's recipe."""
    metadata = dict(help=help, doc=doc or help, shown_default=shown_default, choices=choices, metavar=metavar,
                    beyond=beyond, recipe=recipe, identity=identity, form=form)  # fmt: skip
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that decides a run. Defaults are the reference tutorial's recipe."""

    data: str = option(
        "cats-vs-dogs",
        "image folder with one subfolder per class (or holding PetImages/), 'demo' for the built-in generated "
        "set, or 'cats-vs-dogs' (the downloaded copy)",
        form="data (folder, demo, cats-vs-dogs)",
    )
    epochs: int = option(10, "epochs to train", form="epochs")
    batch_size: int = option(32, "images per batch", identity=True, form="batch size")
    lr: float = option(1e-4, "Adam learning rate", form="learning rate")
    image_size: int | None = option(
        None,
        "input side in pixels: 67..1024; not 227 adds adaptive pooling to 6x6 before the classifier",
        shown_default="227 (224 with --arch torchvision, 96 with --data demo)",
        identity=True,
        form="image size",
    )
    num_classes: int | None = option(None, "output classes", shown_default="the class folders", identity=True)
    val_split: float = option(0.2, "fraction held out from training (0.2: an 80/20 split)", identity=True)
    test_split: float = option(
        0.5,
        "fraction of the held-out images kept for the final report and never used to pick the checkpoint "
        "(0 reports on the validation images)",
        identity=True,
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N", form="device (auto, cpu, cuda:N)")
    workers: int | None = option(None, "data loader processes (started with forkserver)", shown_default="by CPU count")
    seed: int = option(42, "random seed for the split, shuffling, flips and initial weights", identity=True)
    out: str | None = option(
        None,
        "run directory: a new or empty folder (one holding any file is refused, untouched)",
        shown_default="runs/<timestamp>",
    )
    amp: str = option(
        "auto",
        "mixed precision: auto is bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere",
        choices=AMP_MODES,
    )
    channels_last: bool = option(True, "keep NCHW memory layout")
    cache: str = option(
        "disk", "keep decoded, resized images in a file cache under $XDG_CACHE_HOME/alexnet-tui", choices=CACHE_MODES
    )
    limit_batches: int | None = option(None, "at most this many batches per epoch and evaluation (quick tries)")
    stop_on_nan: bool = option(True, "keep training when the loss becomes NaN or inf")
    demo_size: int = option(600, "images in the demo set (--data demo)", identity=True)
    width: float = option(
        1.0, "fraction of the tutorial's channels and units, for quick tries (1 is the tutorial's network)",
        identity=True,
    )  # fmt: skip
    resume: str | None = option(None, "continue a stopped run from its last.pt", metavar="RUN_DIR|last.pt")
    # Beyond the tutorial's recipe; every default below leaves it exactly as it was.
    arch: str = option(
        "tutorial",
        "tutorial, or torchvision: torchvision.models.alexnet (64-192-384-256-256 filters, 224 input)",
        choices=ARCHS, beyond=True, recipe=True, identity=True,
    )  # fmt: skip
    pretrained: bool = option(
        False,
        "start from torchvision's ImageNet weights (downloaded once into $TORCH_HOME/hub/checkpoints); needs "
        "--arch torchvision; images get the weights' own transforms (shorter side 256, centre crop 224)",
        beyond=True, recipe=True, identity=True,
    )  # fmt: skip
    weights: str | None = option(
        None, "ImageNet weights from a file (no internet needed; implies --pretrained)", metavar="FILE", beyond=True
    )
    verify: bool = option(True, "use a weights file whose sha256 or size is not the published one", beyond=True)
    freeze: str = option(
        "none", "features: train the classifier only (needs --pretrained)", choices=FREEZE_MODES,
        beyond=True, recipe=True, identity=True,  # the optimizer holds state for the trainable parameters only
    )  # fmt: skip
    augment: bool = option(
        False,
        "random resized crops and flips, on the device, seeded per batch",
        doc="random resized crops (35-100% of the area, aspect 3/4..4/3) and flips, as tensor ops on the device "
        "from training images cached larger (256 px), so the uint8 cache serves every epoch; seeded per batch, "
        "so a resume is exact",
        beyond=True,
        recipe=True,
    )
    schedule: str = option(
        "none", "learning rate set every batch, after a warm-up (none: constant)", choices=SCHEDULES,
        beyond=True, recipe=True,
    )  # fmt: skip
    warmup_epochs: float = option(
        1.0, "epochs of warm-up before the schedule (fractions allowed)", beyond=True, recipe=True
    )
    weight_decay: float = option(
        0.0, "decoupled weight decay: switches Adam to AdamW (fused)", beyond=True, recipe=True
    )
    label_smoothing: float = option(
        0.0, "label smoothing of the training loss (val_loss is never smoothed)", beyond=True, recipe=True
    )
    patience: int | None = option(
        None, "stop after N epochs without a better val_loss, then report on best.pt", beyond=True, recipe=True
    )
    tta: bool = option(
        False, "the final evaluation averages each image's prediction with its mirror image's",
        beyond=True, recipe=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.image_size is None:
            self.image_size = default_image_size(self.data, self.arch)
        if self.weights:
            self.pretrained = True

    def validate(self) -> TrainConfig:
        """Raise UsageError naming the first bad value and what to do about it."""
        from alexnet_tui.model import smallest_image_size

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UsageError(message)

        need(self.epochs > 0, f"--epochs must be a positive whole number, got {self.epochs}")
        need(self.batch_size > 0, f"--batch-size must be a positive whole number, got {self.batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive finite number, got {self.lr}")
        need(0 <= self.seed < 2**32, f"--seed must be a whole number from 0 to {2**32 - 1}, got {self.seed}")
        need(self.arch in ARCHS, f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        assert self.image_size is not None  # resolved in __post_init__
        low = smallest_image_size(self.arch)
        need(
            low <= self.image_size <= 1024,
            f"--image-size {self.image_size} is not one AlexNet can take: use {low}..1024 (227 is the tutorial's)",
        )
        need(
            self.num_classes is None or self.num_classes >= 2,
            f"--num-classes must be at least 2, got {self.num_classes}",
        )
        need(0 < self.val_split < 1, f"--val-split must be between 0 and 1, got {self.val_split}")
        need(0 <= self.test_split < 1, f"--test-split must be in [0, 1), got {self.test_split}")
        need(self.workers is None or self.workers >= 0, f"--workers must be 0 or more, got {self.workers}")
        need(self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        need(self.cache in CACHE_MODES, f"--cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        need(
            self.limit_batches is None or self.limit_batches > 0,
            f"--limit-batches must be positive, got {self.limit_batches}",
        )
        need(self.demo_size >= 20, f"--demo-size must be at least 20, got {self.demo_size}")
        need(0 < self.width <= 1, f"--width must be in (0, 1] (1 is the tutorial's network), got {self.width}")
        need(
            self.arch == "tutorial" or self.width == 1,
            f"--width {self.width:g} applies to the tutorial's network only; --arch {self.arch} is used whole",
        )
        given = "--weights" if self.weights else "--pretrained"
        need(
            not self.pretrained or self.arch == "torchvision",
            f"{given} needs --arch torchvision: ImageNet weights exist for torchvision's AlexNet "
            "(64-192-384-256-256 filters), not for the tutorial's (96-256-384-384-256)",
        )
        need(self.freeze in FREEZE_MODES, f"--freeze must be one of {', '.join(FREEZE_MODES)}, got {self.freeze!r}")
        need(
            self.freeze == "none" or self.pretrained,
            "--freeze features needs --pretrained (or --weights FILE): frozen random features learn nothing",
        )
        need(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(self.warmup_epochs >= 0, f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        need(
            self.schedule == "none" or self.warmup_epochs < self.epochs,
            f"--warmup-epochs {self.warmup_epochs:g} leaves nothing of --epochs {self.epochs} to the "
            f"{self.schedule} schedule; use fewer warm-up epochs (e.g. --warmup-epochs {self.epochs / 10:g})",
        )
        need(self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        need(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(
            self.patience is None or self.patience >= 1,
            f"--patience must be a positive whole number of epochs, got {self.patience}",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{source}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**{key: _checked(key, value, source) for key, value in values.items()})


_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_WORDS = {"int": "a whole number", "float": "a number", "str": "a string in quotes", "bool": "true or false"}


def _checked(key: str, value: Any, source: str) -> Any:
    """A TOML file's value of the field's type (an int where a float is expected becomes one), or a
    UsageError: `label_smoothing = "0.1"` or `pretrained = "no"` would otherwise fail deep in the run,
    or worse, count as true."""
    annotation = str(TrainConfig.__dataclass_fields__[key].type)
    kind = annotation.removesuffix(" | None")
    if value is None and kind != annotation:
        return value
    if isinstance(value, bool) != (kind == "bool") or not isinstance(value, _KINDS[kind]):
        raise UsageError(f"{source}: {key} = {value!r} should be {_WORDS[kind]}")
    return float(value) if kind == "float" else value


RECIPE_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.metadata["recipe"])  # the recipe line's
RUN_IDENTITY = tuple(f.name for f in fields(TrainConfig) if f.metadata["identity"])  # refused on resume


def flag(name: str) -> str:
    """The command line's spelling of a field: --no-x for one that is on by default."""
    default = TrainConfig.__dataclass_fields__[name].default
    return ("--no-" if default is True else "--") + name.replace("_", "-")


def shown_default(name: str) -> str:
    """A field's default in words ("" where there is none to show: off, on, or decided at run time)."""
    item = TrainConfig.__dataclass_fields__[name]
    if item.metadata["shown_default"]:
        return item.metadata["shown_default"]
    if item.default is None or isinstance(item.default, bool):
        return ""
    return f"{item.default:g}" if isinstance(item.default, float) else str(item.default)


def field_type(name: str) -> type:
    """int, float or str: what a field's value is read as (from the command line or the form)."""
    return _KIND_TYPES[str(TrainConfig.__dataclass_fields__[name].type).removesuffix(" | None")]


_KIND_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


def options_table(beyond: bool) -> str:
    """The docs' table of the options (docs/options.md holds it; tests/test_cli.py checks it is this)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for item in fields(TrainConfig):
        if item.metadata["beyond"] != beyond:
            continue
        choices = item.metadata["choices"]
        meaning = item.metadata["doc"] + (f" ({', '.join(choices)})" if choices else "")
        rows.append(f"| `{flag(item.name)}` | {shown_default(item.name)} | {meaning} |")
    return "\n".join(rows)


def recipe_text(settings: dict[str, Any]) -> str:
    """The recipe in one line, as options: the learning rate and batch, then whatever differs from the
    tutorial's (a run's config.toml says it all; this is what a reader of the log wants first)."""
    defaults = TrainConfig()
    lr, batch_size = settings.get("lr", defaults.lr), settings.get("batch_size", defaults.batch_size)
    words = [f"--lr {lr:g}", f"--batch-size {batch_size}"]
    for name in RECIPE_FIELDS:
        value, default = settings.get(name, getattr(defaults, name)), getattr(defaults, name)
        if name == "warmup_epochs" and settings.get("schedule", "none") == "none":
            continue  # no schedule, no warm-up
        if value == default or value is None:
            continue
        option = "--" + name.replace("_", "-")
        if value is not True:
            option += f" {value:g}" if isinstance(value, float) else f" {value}"
        words.append(option)
    if len(words) == 2:
        words.append("(Adam, a constant rate, no augmentation)")
    return " ".join(words)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read settings from a TOML file; keys may use dashes or underscores."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: cannot read it as TOML ({error})") from None
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    TrainConfig.from_dict(values, source=str(path))
    return values


def to_toml(config: TrainConfig) -> str:
    """Write the settings as TOML (None means 'decide at run time' and is left out)."""
    lines = []
    for key, value in config.to_dict().items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
