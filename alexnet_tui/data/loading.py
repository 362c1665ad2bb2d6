"""Turn --data into train/validation/test datasets: a scanned folder or the built-in demo set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.demo import DEMO_CLASSES, demo_tensors
from alexnet_tui.data.images import FolderImages, TensorImages, cache_path, split_variants
from alexnet_tui.data.scan import Progress, samples_fingerprint, scan_folder
from alexnet_tui.data.split import split_indices
from alexnet_tui.errors import UsageError
from alexnet_tui.paths import cache_dir


@dataclass
class DataBundle:
    name: str
    class_names: list[str]
    train: Dataset
    val: Dataset
    test: Dataset | None
    skipped: list[str] = field(default_factory=list)
    root: Path | None = None
    in_memory: bool = False  # True when decoding costs nothing, so loader workers would not help
    # The run's split as paths relative to root (None for the demo set, which the seed decides):
    # stored in the checkpoints, so a resume or an evaluation uses the same images whatever changed.
    split: dict[str, list[str]] | None = None
    changes: list[str] = field(default_factory=list)  # what differs from the kept split, in words

    def summary(self) -> dict:
        return {
            "name": self.name,
            "root": str(self.root) if self.root else None,
            "class_names": self.class_names,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test) if self.test is not None else 0,
            "skipped": len(self.skipped),
        }


def load_data(
    config: TrainConfig,
    kept_split: dict[str, list[str]] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Progress = lambda done, total: None,
) -> DataBundle:
    """The datasets for a run; `kept_split` is an earlier run's (from its checkpoint) to keep."""
    if config.data == "demo":
        return _demo_bundle(config)
    if config.data == "cats-vs-dogs":
        location = cache_dir() / "cats-vs-dogs"
        if not location.exists():
            raise UsageError(
                "Cats vs Dogs is not downloaded yet: run `alexnet-tui download` first, or train on --data demo"
            )
        return _folder_bundle(config, location, "cats-vs-dogs", kept_split, should_stop, on_progress)
    location = Path(config.data).expanduser()
    return _folder_bundle(config, location, location.name or config.data, kept_split, should_stop, on_progress)


def _demo_bundle(config: TrainConfig) -> DataBundle:
    images, labels = demo_tensors(config.demo_size, config.image_size, config.seed)
    train, val, test = split_indices(labels.tolist(), config.val_split, config.test_split, config.seed)

    def part(indices: list[int]) -> TensorImages:
        return TensorImages(images[indices], labels[indices])

    return DataBundle("demo", list(DEMO_CLASSES), part(train), part(val), part(test) if test else None, in_memory=True)


def keep_split(
    samples: list[tuple[str, int]], kept: dict[str, list[str]]
) -> tuple[list[int], list[int], list[int], list[str]]:
    """An earlier run's split over today's files: files gone (or unreadable now) are skipped, files
    added since are left out (they would leak held-out images into training). Says what changed."""
    index = {path: i for i, (path, _) in enumerate(samples)}
    parts = [[index[path] for path in kept.get(name, []) if path in index] for name in ("train", "val", "test")]
    known = {path for paths in kept.values() for path in paths}
    gone = len(known) - sum(len(part) for part in parts)
    added = sum(1 for path, _ in samples if path not in known)
    changes = []
    if gone:
        changes.append(f"{gone} image(s) of this run's split are gone or unreadable now; skipped")
    if added:
        changes.append(f"{added} image(s) added since the run began; left out (a new run would use them)")
    return parts[0], parts[1], parts[2], changes


def _folder_bundle(
    config: TrainConfig,
    location: Path,
    name: str,
    kept_split: dict[str, list[str]] | None,
    should_stop: Callable[[], bool],
    on_progress: Progress,
) -> DataBundle:
    scan = scan_folder(location, should_stop, on_progress)
    changes: list[str] = []
    if kept_split is None:
        train, val, test = split_indices(
            [label for _, label in scan.samples], config.val_split, config.test_split, config.seed
        )
    else:
        train, val, test, changes = keep_split(scan.samples, kept_split)
        if not train or not val:
            raise UsageError(
                f"--data {location}: the images this run was trained and validated on are gone; "
                "point --data at them or start a new run"
            )

    # The tutorial's geometry, or the ImageNet weights' with --pretrained; --augment stores the training
    # images larger, to be cropped on the device.
    train_variant, train_side, eval_variant = split_variants(config.image_size, config.pretrained, config.augment)

    def part(split: str, indices: list[int], variant: str, side: int = config.image_size) -> FolderImages:
        samples = [scan.samples[i] for i in indices]
        cache = None
        if config.cache == "disk":
            cache = cache_path(samples_fingerprint(scan.fingerprint, samples), split, variant, side)
        return FolderImages(scan.root, samples, side, variant, cache)

    return DataBundle(
        name,
        scan.class_names,
        part("train", train, train_variant, train_side),
        part("val", val, eval_variant),
        part("test", test, eval_variant) if test else None,
        skipped=scan.skipped,
        root=scan.root,
        split={
            key: [scan.samples[i][0] for i in indices]
            for key, indices in (("train", train), ("val", val), ("test", test))
        },
        changes=changes,
    )
