"""The command line: tutorial-style logs, settings precedence, bad input, exit codes, import hygiene."""

import re
import subprocess
import sys

import pytest

from alexnet_tui.cli import main
from alexnet_tui.metrics import read_metrics
from tests.conftest import ROOT, TINY_ARGS
from tests.test_model import TUTORIAL_TABLE_TAIL


def test_headless_run_logs_like_the_tutorial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "2", "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out  # a file gets plain lines, no bar
    assert re.search(r"^\[INFO\] val_loss has been improved from inf to \d\.\d{5}\. Saving Model!$", out, re.M)
    assert re.search(
        r"^epoch 02, loss: \d\.\d{5}, acc: \d\.\d{5}, val_loss: \d\.\d{5}, val_accuracy: \d\.\d{5}", out, re.M
    )
    assert re.search(r"^test loss: \d\.\d{5}, test accuracy: \d\.\d{5}$", out, re.M)
    run = tmp_path / "run"
    records = read_metrics(run / "metrics.jsonl")
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 2
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_sec", "seconds"} <= set(epochs[0])
    batches = [r for r in records if r["event"] == "batch"]
    assert len(batches) == 10 and batches[-1]["seconds_left"] == 0
    assert (run / "best.pt").exists() and (run / "last.pt").exists()
    assert "test loss" in (run / "train.log").read_text()


def test_settings_come_from_toml_and_the_command_line_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("epochs = 3\nbatch-size = 16\nlimit_batches = 1\n")
    assert main(["--no-ui", *TINY_ARGS, "--config", "c.toml", "--epochs", "1", "--out", "run"]) == 0
    written = (tmp_path / "run" / "config.toml").read_text()
    assert "epochs = 1" in written and "batch_size = 8" in written and "limit_batches = 1" in written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing"], "no such folder"),
        (["--data", "empty"], "no class subfolders"),
        (["--epochs", "0"], "--epochs must be a positive"),
        (["--batch-size", "-1"], "--batch-size must be a positive"),
        (["--lr", "0"], "--lr must be a positive"),
        (["--image-size", "32"], "--image-size 32 is not one AlexNet can take"),
        (["--width", "2"], "--width must be in (0, 1]"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--device", "tpu"], "is not a device"),
        (["--out", "blocked/run"], "cannot write there"),
        (["--out", "taken"], "already holds a run"),
        (["--resume", "taken"], "not a readable PyTorch checkpoint"),
        (["--config", "nope.toml"], "no such file"),
        (["--config", "quoted.toml"], "quoted.toml: label_smoothing = '0.1' should be a number"),
        (["--config", "no.toml"], "no.toml: pretrained = 'no' should be true or false"),  # not a true string
        (["--config", "half.toml"], "half.toml: epochs = 2.5 should be a whole number"),
        (["--config", "typo.toml"], "typo.toml: unknown setting 'learning_rate'"),
        (["--config", "bytes.toml"], "bytes.toml: cannot read it as TOML"),  # not UTF-8
        (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295"),
        (["--seed", "99999999999999999999"], "--seed must be a whole number from 0"),
        (["--lr", "inf"], "--lr must be a positive finite number"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "blocked").write_text("a file where a folder should be")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "last.pt").write_bytes(b"precious")
    (tmp_path / "quoted.toml").write_text('label_smoothing = "0.1"\n')
    (tmp_path / "no.toml").write_text('pretrained = "no"\narch = "torchvision"\n')
    (tmp_path / "half.toml").write_text("epochs = 2.5\n")
    (tmp_path / "typo.toml").write_text("learning_rate = 0.001\n")
    (tmp_path / "bytes.toml").write_bytes(b"epochs = 2\n\xff\xfe = 1\n")
    assert main(["--no-ui", *TINY_ARGS, *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err + captured.out
    assert (tmp_path / "taken" / "last.pt").read_bytes() == b"precious"
    assert not (tmp_path / "runs").exists()


def test_summary_prints_the_tutorial_table(capsys):
    assert main(["summary", "--num-classes", "1000"]) == 0
    assert capsys.readouterr().out.endswith(TUTORIAL_TABLE_TAIL)
    assert main(["summary"]) == 0
    assert "Linear-20                    [-1, 2]" in capsys.readouterr().out
    assert main(["summary", "--num-classes", "0"]) == 2  # refused, not taken for the default
    assert "--num-classes must be at least 2, got 0" in capsys.readouterr().err


def test_headless_never_imports_textual(tmp_path):
    code = (
        "import sys; from alexnet_tui.cli import main; "
        f"rc = main(['--no-ui', *{TINY_ARGS!r}, '--epochs', '1', '--limit-batches', '1', '--out', 'run']); "
        "print('TEXTUAL' if 'textual' in sys.modules else 'CLEAN', rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().endswith("CLEAN 0"), done.stdout + done.stderr


def test_not_a_terminal_runs_headless_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*TINY_ARGS, "--epochs", "1", "--limit-batches", "1", "--out", "run"]) == 0
    err = capsys.readouterr().err
    assert "not a terminal" in err and "--no-ui" in err


def test_without_a_test_split_the_final_report_is_on_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--no-ui", *TINY_ARGS, "--epochs", "1", "--limit-batches", "1", "--test-split", "0", "--out", "run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^val loss: \d\.\d{5}, val accuracy: \d\.\d{5}$", out, re.M)
    assert "val images; best checkpoint:" in out


def test_long_steps_show_progress_in_a_log_file(tmp_path, monkeypatch, capsys, pet_folder):
    """Checking the images and each evaluation pass: plain lines with count, rate and ETA."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("alexnet_tui.headless.PLAIN_PROGRESS_EVERY_S", 0.0)  # a line per update, not every 10 s
    assert main(["--no-ui", *TINY_ARGS, "--data", str(pet_folder), "--epochs", "1", "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^checking images: 21/21 \(\d+\.\d/s, ETA 0:00\)$", out, re.M)
    assert re.search(r"^evaluating on val: \d+/\d+ ", out, re.M) and re.search(r"^evaluating on test: ", out, re.M)
    progress = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["event"] == "progress"]
    assert {r["task"] for r in progress} >= {"evaluating on val", "evaluating on test"}  # the scan precedes the file


def test_the_docs_option_tables_are_the_ones_config_declares():
    """Each option is declared once (config.py); docs/options.md holds the tables made from it."""
    from alexnet_tui.config import options_table

    docs = (ROOT / "docs" / "options.md").read_text()
    for beyond in (False, True):
        marker = f"<!-- options_table(beyond={beyond}): generated from config.py, checked by tests/test_cli.py -->\n"
        assert marker + options_table(beyond) + "\n\n" in docs, f"regenerate docs/options.md's table (beyond={beyond})"
