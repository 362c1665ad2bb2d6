import json

from PIL import Image

from alexnet_tui.cli import main
from tests.conftest import TINY_ARGS, jpeg_bytes


def test_evaluate_and_predict_from_a_checkpoint(tmp_path, pet_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--data", str(pet_folder), "--epochs", "1", "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "run", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "evaluation accuracy" in out and "confusion matrix" in out and "Cat" in out
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
