import pytest
import torch

from alexnet_tui.config import TrainConfig
from alexnet_tui.data.demo import DEMO_CLASSES, demo_tensors
from alexnet_tui.data.images import UNREADABLE, FolderImages, load_resized
from alexnet_tui.data.loading import load_data, split_indices
from alexnet_tui.data.scan import scan_folder
from alexnet_tui.errors import UsageError
from tests.conftest import jpeg_bytes


def test_scan_keeps_good_images_and_counts_the_rest(pet_folder):
    result = scan_folder(pet_folder)  # the folder that holds PetImages/
    assert result.root.name == "PetImages"
    assert result.class_names == ["Cat", "Dog"]
    kept = {path for path, _ in result.samples}
    assert len(kept) == 15
    assert {"Cat/cmyk.jpg", "Cat/gray.jpg", "Cat/png-named.jpg"} <= kept
    assert sorted(result.skipped) == sorted(
        ["Cat/666.jpg", "Cat/Thumbs.db", "Cat/truncated.jpg", "Dog/666.jpg", "Dog/Thumbs.db", "Dog/truncated.jpg"]
    )


def test_second_scan_decodes_nothing_and_a_changed_file_is_rechecked(pet_folder):
    assert scan_folder(pet_folder).decoded == 21
    assert scan_folder(pet_folder / "PetImages").decoded == 0
    (pet_folder / "PetImages" / "Dog" / "666.jpg").write_bytes(jpeg_bytes(30, 30, seed=1))
    again = scan_folder(pet_folder)
    assert again.decoded == 1
    assert "Dog/666.jpg" not in again.skipped


def test_odd_modes_become_rgb(pet_folder):
    for name in ("cmyk.jpg", "gray.jpg", "png-named.jpg"):
        pixels = load_resized(pet_folder / "PetImages" / "Cat" / name, 67, "eval")
        assert pixels.shape == (3, 67, 67) and pixels.dtype == torch.uint8


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "no class subfolders"),
        ({"Cat": 2}, "at least two classes"),
        ({"Cat": 2, "Dog": 0}, "at least two classes"),
        ({"Cat": 2, "Dog": 2, "Fox": 0}, "'Fox' has no readable image"),
    ],
)
def test_bad_folders_are_refused_with_a_reason(tmp_path, layout, message):
    for name, count in layout.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "broken.jpg").write_bytes(b"")
        for index in range(count):
            (tmp_path / name / f"{index}.jpg").write_bytes(jpeg_bytes(20, 20, index))
    with pytest.raises(UsageError, match=message):
        scan_folder(tmp_path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no such folder"):
        scan_folder(tmp_path / "nope")


def test_split_is_seeded_stratified_and_disjoint():
    labels = [0] * 50 + [1] * 50
    first = split_indices(labels, 0.2, 0.5, seed=3)
    assert first == split_indices(labels, 0.2, 0.5, seed=3)
    assert first != split_indices(labels, 0.2, 0.5, seed=4)
    train, val, test = first
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert not set(train) & set(val) and not set(val) & set(test)
    assert sum(labels[i] for i in val) == 5


def test_folder_images_are_cached_and_a_file_broken_after_the_scan_is_skipped(pet_folder, tmp_path):
    result = scan_folder(pet_folder)
    cache = tmp_path / "c.u8"
    dataset = FolderImages(result.root, result.samples[:3], 67, "train", cache)
    first, label = dataset[0]
    assert first.shape == (3, 67, 67) and label == result.samples[0][1]
    (result.root / result.samples[0][0]).unlink()  # gone after the scan: served from the cache
    assert torch.equal(FolderImages(result.root, result.samples[:3], 67, "train", cache)[0][0], first)
    (result.root / result.samples[1][0]).write_bytes(b"")
    assert dataset[1][1] == UNREADABLE


def test_demo_set_is_deterministic_and_balanced():
    images, labels = demo_tensors(30, 67, seed=1)
    again, _ = demo_tensors(30, 67, seed=1)
    assert images.dtype == torch.uint8 and images.shape == (30, 3, 67, 67)
    assert torch.equal(images, again)
    assert labels.bincount().tolist() == [10, 10, 10]


def test_load_data_on_a_folder_and_on_demo(pet_folder):
    bundle = load_data(TrainConfig(data=str(pet_folder), image_size=67))
    assert bundle.class_names == ["Cat", "Dog"]
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 15
    assert len(bundle.skipped) == 6
    demo = load_data(TrainConfig(data="demo", image_size=67, demo_size=60))
    assert demo.class_names == DEMO_CLASSES and len(demo.train) == 48


def test_cats_vs_dogs_missing_says_how_to_get_it():
    with pytest.raises(UsageError, match="alexnet-tui download"):
        load_data(TrainConfig())


def test_the_demo_picks_its_own_image_size_and_typed_options_win():
    assert TrainConfig(data="demo").image_size == 96
    assert TrainConfig(data="demo", image_size=227).image_size == 227
    assert TrainConfig().image_size == 227 and TrainConfig(arch="torchvision").image_size == 224
