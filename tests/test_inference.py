import json

import torch
from PIL import Image

from alexnet_tui.cli import main
from tests.conftest import TINY_ARGS, jpeg_bytes


def test_evaluate_and_predict_from_a_checkpoint(tmp_path, pet_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--data", str(pet_folder), "--epochs", "1", "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "run", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out and "confusion matrix" in out and "Cat" in out
    report = json.loads((tmp_path / "run" / "evaluation-val.json").read_text())
    assert set(report["per_class"]) == {"Cat", "Dog"}
    assert sum(map(sum, report["confusion_matrix"])) == report["images"]
    assert all(m["image"].endswith(".jpg") for m in report["most_confident_mistakes"])
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(80, 60, seed=5))
    gray = tmp_path / "gray.png"
    Image.new("L", (30, 30)).save(gray)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = main(["predict", "--checkpoint", "run/best.pt", str(good), str(broken), str(gray)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{good}: " in captured.out and f"{gray}: " in captured.out
    assert "Cat" in captured.out and "Dog" in captured.out
    assert f"{broken}: cannot read it as an image" in captured.err


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def test_a_sideways_photo_is_read_upright_for_predict_and_as_stored_for_training(tmp_path):
    from alexnet_tui.data.images import load_resized

    upright = Image.new("RGB", (120, 80), (200, 30, 30))
    upright.paste((30, 30, 200), (0, 0, 60, 80))  # left half blue: any turn shows
    upright.save(tmp_path / "upright.png")
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.png", exif=exif_orientation(6))
    seen = load_resized(tmp_path / "phone.png", 67, "eval", upright=True)
    assert (seen == load_resized(tmp_path / "upright.png", 67, "eval")).all()
    as_stored = load_resized(tmp_path / "phone.png", 67, "eval")  # what the tutorial's ImageFolder reads
    assert not (as_stored == seen).all()


class RedOnTheRight(torch.nn.Module):
    """A classifier that can only tell where the red is: 'right' when it is in the right half."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        half = images.shape[-1] // 2
        red = images[:, 0]
        return torch.stack([red[..., :half].mean((1, 2)), red[..., half:].mean((1, 2))], 1) * 20


def test_predict_sees_a_phone_photo_the_way_a_viewer_shows_it(tmp_path):
    from alexnet_tui.inference import predict_image

    upright = Image.new("RGB", (120, 80), (220, 20, 20))
    upright.paste((20, 20, 220), (0, 0, 60, 80))  # blue on the left, red on the right
    phone = tmp_path / "phone.jpg"  # stored sideways with EXIF orientation 6, as phones do
    upright.transpose(Image.Transpose.ROTATE_90).save(phone, quality=95, exif=exif_orientation(6))
    payload = {"image_size": 67, "class_names": ["left", "right"], "config": {}}
    line, ok = predict_image(RedOnTheRight(), payload, str(phone), 1, torch.device("cpu"))
    name, probability = line.removeprefix(f"{phone}: ").split()
    assert ok and name == "right" and float(probability) > 0.9  # sideways, it would be a coin toss (0.5)


def test_evaluate_refuses_a_checkpoint_for_other_classes(tmp_path, pet_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--limit-batches", "1", "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "run", "--data", str(pet_folder)]) == 2
    assert "made for 3 classes, this data has 2" in capsys.readouterr().err


def test_evaluate_writes_a_self_contained_html_report(tmp_path, pet_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--data", str(pet_folder), "--epochs", "1", "--out", "run"]) == 0
    assert main(["evaluate", "--checkpoint", "run", "--split", "val", "--html", "report.html"]) == 0
    page = (tmp_path / "report.html").read_text()
    report = json.loads((tmp_path / "run" / "evaluation-val.json").read_text())
    assert "<h2>Confusion matrix</h2>" in page and "Cat" in page and "Dog" in page
    assert f"accuracy {report['accuracy']:.5f}" in page
    assert page.count("data:image/jpeg;base64,") == len(report["most_confident_mistakes"])  # thumbnails inlined
    assert "http://" not in page and "https://" not in page  # nothing to fetch: opens offline
    assert main(["evaluate", "--checkpoint", "run", "--html", str(tmp_path / "missing" / "r.html")]) == 2
