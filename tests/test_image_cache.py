"""The uint8 image cache never serves pixels of a file that changed, and stays whole when runs share it."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.images import FolderImages, load_resized
from alexnet_tui.data.loading import load_data
from alexnet_tui.data.scan import scan_folder
from tests.conftest import jpeg_bytes

SIZE = 67


def fresh(dataset: FolderImages, index: int) -> torch.Tensor:
    """What a cache-free decode of the file on disk gives now, at the dataset's geometry."""
    return load_resized(dataset.root / dataset.samples[index][0], dataset.image_size, dataset.variant)


def bmp_bytes(seed: int) -> bytes:
    """BMPs of one geometry all have one size, so a new image can match an old one's size exactly."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="BMP")
    return buffer.getvalue()


def write_bmp_dataset(root: Path, seed: int) -> None:
    for label, name in enumerate(["Cat", "Dog"]):
        (root / name).mkdir(parents=True)
        for index in range(4):
            (root / name / f"{index}.jpg").write_bytes(bmp_bytes(seed + 10 * label + index))


def test_an_image_replaced_under_the_same_name_is_decoded_again(pet_folder, tmp_path):
    scan = scan_folder(pet_folder)
    cache = tmp_path / "train.img"
    running = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    old, label = running[0]
    target = scan.root / scan.samples[0][0]
    before = target.stat()
    target.write_bytes(jpeg_bytes(60, 60, seed=4242))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    new = load_resized(target, SIZE, "train")
    assert not torch.equal(new, old)
    next_run = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    assert torch.equal(next_run[0][0], new) and next_run[0][1] == label
    assert torch.equal(running[0][0], new)  # a run already going sees the new file too


def test_another_dataset_with_the_same_names_sizes_and_mtimes_is_not_served_stale(tmp_path):
    root = tmp_path / "pets"
    write_bmp_dataset(root, seed=1)
    config = TrainConfig(data=str(root), image_size=SIZE, val_split=0.25)
    first = load_data(config).train
    old = [first[i][0] for i in range(len(first))]
    stats = {path: path.stat() for path in root.rglob("*.jpg")}
    shutil.rmtree(root)
    time.sleep(0.05)  # a later clock tick, as any real re-extraction is
    # As unzipping another archive does: same names, same sizes, the archive's mtimes.
    write_bmp_dataset(root, seed=500)
    for path, stat in stats.items():
        assert path.stat().st_size == stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_data(config).train
    assert second.cache_file == first.cache_file  # the scan cannot tell the two apart: only the entries can
    for index in range(len(second)):
        pixels = second[index][0]
        assert torch.equal(pixels, fresh(second, index)) and not torch.equal(pixels, old[index])


def test_a_second_run_opening_a_half_filled_cache_keeps_it_and_both_serve_fresh_decodes(pet_folder, tmp_path):
    scan = scan_folder(pet_folder)
    cache = tmp_path / "train.img"
    first = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    expected = [fresh(first, i) for i in range(len(first))]
    half = len(first) // 2
    for index in range(half):
        first[index]
    inode = cache.stat().st_ino
    second = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    assert cache.stat().st_ino == inode
    for index in range(half):
        (scan.root / scan.samples[index][0]).unlink()  # from now on only the cache has these images
    for index in reversed(range(len(first))):
        assert torch.equal(second[index][0], expected[index])
        assert torch.equal(first[index][0], expected[index])


def _fill_and_compare(root: Path, samples: list, cache: Path, reverse: bool, barrier, results) -> None:
    barrier.wait()  # both runs create and fill the cache at the same moment
    dataset = FolderImages(root, samples, SIZE, "train", cache)
    order = list(range(len(samples)))[:: -1 if reverse else 1]
    mismatches = 0
    for _ in range(3):
        for index in order:
            mismatches += not torch.equal(dataset[index][0], fresh(dataset, index))
    results.put(mismatches)


def test_two_processes_filling_one_cache_at_once_stay_correct(pet_folder, tmp_path):
    scan = scan_folder(pet_folder)
    cache = tmp_path / "train.img"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    runs = [
        context.Process(target=_fill_and_compare, args=(scan.root, scan.samples, cache, reverse, barrier, results))
        for reverse in (False, True)
    ]
    for run in runs:
        run.start()
    counts = [results.get(timeout=120) for _ in runs]
    for run in runs:
        run.join(timeout=60)
        assert run.exitcode == 0
    assert counts == [0, 0]
    dataset = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    expected = [fresh(dataset, i) for i in range(len(dataset))]
    for relative, _ in scan.samples:
        (scan.root / relative).unlink()  # what the two runs left in the cache, alone
    assert all(torch.equal(dataset[i][0], expected[i]) for i in range(len(dataset)))


def test_another_image_size_or_variant_never_reads_the_other_entries(pet_folder, tmp_path):
    scan = scan_folder(pet_folder)
    cache = tmp_path / "same-file.img"  # the worst case: one file for every geometry
    small = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    for index in range(len(small)):
        small[index]
    large = FolderImages(scan.root, scan.samples, 80, "train", cache)
    evaluation = FolderImages(scan.root, scan.samples, SIZE, "eval", cache)
    for index in range(len(small)):
        assert torch.equal(large[index][0], fresh(large, index))
        assert large[index][0].shape == (3, 80, 80)
        assert torch.equal(evaluation[index][0], fresh(evaluation, index))
        assert torch.equal(small[index][0], fresh(small, index))
        assert torch.equal(FolderImages(scan.root, scan.samples, SIZE, "train", cache)[index][0], fresh(small, index))


def test_a_file_left_by_an_older_layout_is_not_trusted(pet_folder, tmp_path):
    scan = scan_folder(pet_folder)
    cache = tmp_path / "old.img"
    cache.write_bytes(b"\xff" * (len(scan.samples) * 3 * SIZE * SIZE))  # the old .u8: pixels only, no keys
    dataset = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    assert all(torch.equal(dataset[i][0], fresh(dataset, i)) for i in range(len(dataset)))


def test_loader_workers_fill_the_cache_and_return_what_direct_decoding_does(pet_folder, tmp_path):
    scan = scan_folder(pet_folder)
    cache = tmp_path / "train.img"
    dataset = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    expected = torch.stack([fresh(dataset, i) for i in range(len(dataset))])
    labels = torch.tensor([label for _, label in scan.samples])
    loader = DataLoader(
        dataset, batch_size=4, num_workers=1, multiprocessing_context="forkserver", persistent_workers=True
    )
    for _ in range(2):  # the first epoch decodes in the worker, the second reads what it cached
        images, targets = (torch.cat(parts) for parts in zip(*loader, strict=True))
        assert torch.equal(images, expected) and torch.equal(targets, labels)
    for relative, _ in scan.samples:
        (scan.root / relative).unlink()
    again = FolderImages(scan.root, scan.samples, SIZE, "train", cache)
    assert torch.equal(torch.stack([again[i][0] for i in range(len(again))]), expected)


def test_a_full_cache_disk_is_one_line_not_a_bus_error(tmp_path, pet_folder, tmpfs, monkeypatch, capsys):
    """The sparse cache file was mapped and its pages taken as images were decoded: on a full disk
    a page that could not be backed was SIGBUS, exit 135 without a word (with workers: 'shm')."""
    from alexnet_tui.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmpfs("cache", "size=64k")))
    code = main(["--no-ui", "--data", str(pet_folder), "--image-size", "96", "--width", "0.0625", "--epochs", "1",
                 "--batch-size", "4", "--workers", "2", "--out", str(tmp_path / "run")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert "the image cache needs" in error and "that disk is full" in error and "--cache off" in error


def test_a_read_only_cache_folder_is_one_line(tmp_path, pet_folder, tmpfs, monkeypatch, capsys):
    from alexnet_tui.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmpfs("ro", "ro,size=64k")))
    code = main(["--no-ui", "--data", str(pet_folder), "--image-size", "96", "--width", "0.0625", "--epochs", "1",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert "cannot write the image cache" in error and "Read-only file system" in error
