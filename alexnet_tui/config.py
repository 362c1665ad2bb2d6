"""The training configuration: one dataclass, validated once, read from and written to TOML."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
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


@dataclass
class TrainConfig:
    """Everything that decides a run. Defaults are the reference tutorial's recipe."""

    data: str = "cats-vs-dogs"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    image_size: int | None = None  # None: default_image_size (227 tutorial, 224 torchvision, 96 demo)
    num_classes: int | None = None
    val_split: float = 0.2
    test_split: float = 0.5
    device: str = "auto"
    workers: int | None = None
    seed: int = 42
    out: str | None = None
    amp: str = "auto"
    channels_last: bool = True
    cache: str = "disk"
    limit_batches: int | None = None
    stop_on_nan: bool = True
    demo_size: int = 600
    width: float = 1.0  # fraction of the tutorial's channels and units; 1 is the tutorial's network
    resume: str | None = None
    # Beyond the tutorial's recipe; every default below leaves it exactly as it was.
    arch: str = "tutorial"  # or "torchvision": torchvision.models.alexnet
    pretrained: bool = False  # ImageNet weights (torchvision's AlexNet_Weights.IMAGENET1K_V1)
    weights: str | None = None  # a local copy of those weights (implies pretrained)
    verify: bool = True  # check the weights file's sha256 and size
    freeze: str = "none"  # "features": train the classifier only
    augment: bool = False  # random resized crops and flips on the device
    schedule: str = "none"  # learning rate per batch: none, cosine or onecycle, after a warm-up
    warmup_epochs: float = 1.0
    weight_decay: float = 0.0  # > 0 switches Adam to AdamW
    label_smoothing: float = 0.0
    patience: int | None = None  # stop after this many epochs without a better val_loss
    tta: bool = False  # the final evaluation averages each image's and its mirror's prediction

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


RECIPE_FIELDS = ("arch", "pretrained", "freeze", "augment", "schedule", "warmup_epochs", "weight_decay",
                 "label_smoothing", "patience", "tta")  # fmt: skip


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
