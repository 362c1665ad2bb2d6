"""A run keeps its split and its identity when the data or the options change between runs."""

import json

import pytest

from alexnet_tui.cli import main
from alexnet_tui.engine import Trainer
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.metrics import read_metrics
from tests.conftest import TINY_ARGS, jpeg_bytes, make_pet_images, tiny_config


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A one-epoch run on a PetImages-shaped folder of 10 images a class, in ./run."""
    monkeypatch.chdir(tmp_path)
    make_pet_images(tmp_path / "pets", per_class=10)
    assert main(["--no-ui", *TINY_ARGS, "--data", "pets", "--batch-size", "4", "--epochs", "1", "--out", "run"]) == 0
    return tmp_path / "run"


def test_resume_keeps_the_split_when_files_are_added_and_removed(trained, capsys):
    """Files added and removed before a resume: held-out images never move into training."""
    split = load_checkpoint(trained / "last.pt")["split"]
    gone = split["val"][0]
    (trained.parent / "pets" / "PetImages" / gone).unlink()
    for index in range(4):
        (trained.parent / "pets" / "PetImages" / "Dog" / f"new{index}.jpg").write_bytes(jpeg_bytes(60, 50, 50 + index))
    capsys.readouterr()
    assert main(["--no-ui", "--resume", "run", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) of this run's split are gone or unreadable now; skipped" in out
    assert "4 image(s) added since the run began; left out" in out
    after = load_checkpoint(trained / "last.pt")["split"]
    assert after["train"] == split["train"] and after["test"] == split["test"]
    assert after["val"] == [path for path in split["val"] if path != gone]
    assert not any("new" in path for paths in after.values() for path in paths)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", "3"), ("--val-split", "0.3"), ("--test-split", "0"), ("--batch-size", "8"), ("--image-size", "80")],
)
def test_resume_refuses_options_that_would_make_it_another_run(trained, capsys, option, value):
    capsys.readouterr()
    assert main(["--no-ui", "--resume", "run", option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err
    assert "would change what this run is" in err or "made for" in err  # the checkpoint check may say it first
    assert len([r for r in read_metrics(trained / "metrics.jsonl") if r["event"] == "run_started"]) == 1


def test_resume_applies_and_says_options_that_may_change(trained, capsys):
    capsys.readouterr()
    assert main(["--no-ui", "--resume", "run", "--epochs", "2", "--lr", "0.001", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "resumed with --epochs 2 (was 1), --lr 0.001 (was 0.0001)" in out
    saved = load_checkpoint(trained / "last.pt")
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.001  # not the rate saved in the checkpoint
    assert saved["config"]["epochs"] == 2


def test_evaluate_reports_on_the_run_s_own_held_out_images(trained, capsys):
    """New files under the data folder do not shift `alexnet-tui evaluate` onto training images."""
    split = load_checkpoint(trained / "best.pt")["split"]
    for index in range(6):
        (trained.parent / "pets" / "PetImages" / "Cat" / f"a{index}.jpg").write_bytes(jpeg_bytes(50, 50, 70 + index))
    assert main(["evaluate", "--checkpoint", "run", "--split", "val"]) == 0
    report = json.loads((trained / "evaluation-val.json").read_text())
    assert report["images"] == len(split["val"])


def test_a_stop_requested_before_training_begins_is_kept(tmp_path):
    """A signal during data preparation: fit() must not forget it and train every epoch."""
    with Trainer(tiny_config(tmp_path)) as trainer:
        trainer.prepare()
        trainer.control.request_stop("SIGINT received")
        trainer.fit()
        assert trainer.position().batch == 0 and trainer.position().epoch == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
