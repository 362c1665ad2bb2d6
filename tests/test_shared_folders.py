"""A run folder others can touch: a folder holding a user's files is never taken, and nothing
planted in control/ (a link, a directory, a FIFO, a file that is not a small JSON object) blocks,
crashes or fails a run, nor makes it follow a link or delete another's file."""

from __future__ import annotations

import json
import os

from alexnet_tui.cli import main
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.engine.run_dir import RunDirectory
from alexnet_tui.engine.trainer import Trainer
from alexnet_tui.engine.training_state import RunOutcome
from tests.conftest import TINY_ARGS, tiny_config


def snapshot(folder) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def test_a_folder_that_holds_a_users_files_is_refused_and_left_as_it_was(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "proj"
    (project / "control").mkdir(parents=True)
    (project / "control" / "motor.yaml").write_text("x\n")
    (project / "STOP").write_text("keep\n")
    (project / "config.toml").write_text("[server]\nport=1\n")
    before = snapshot(project)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", "proj"]) == 2
    error = one_line_error(capsys)
    assert "proj already holds files (STOP, config.toml, control)" in error and "new or empty folder" in error
    assert snapshot(project) == before and not (project / ".lock").exists()  # not even a lock is left


def test_an_empty_folder_is_a_new_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", "empty"]) == 0
    assert (tmp_path / "empty" / "best.pt").is_file()


def test_a_planted_lock_link_is_refused_and_its_target_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", "run"]) == 0
    capsys.readouterr()
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's notes\n")
    (tmp_path / "run" / ".lock").unlink()
    (tmp_path / "run" / ".lock").symlink_to(victim)
    assert main(["--no-ui", "--resume", "run", "--epochs", "2"]) == 2
    assert "run/.lock is a link" in one_line_error(capsys)
    assert victim.read_text() == "someone's notes\n"
    (tmp_path / "run" / ".lock").unlink()
    (tmp_path / "run" / "control").rmdir()
    (tmp_path / "run" / "control").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "00000000000000000001-0000beef.json").write_text('{"command": "stop"}')
    assert main(["--no-ui", "--resume", "run", "--epochs", "2"]) == 2
    assert "run/control is not a directory of this run" in one_line_error(capsys)
    assert (tmp_path / "elsewhere" / "00000000000000000001-0000beef.json").exists()  # nothing deleted there


def test_request_files_of_every_kind_are_set_aside_and_the_run_goes_on(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text('{"command": "stop"}')  # a link to it must not stop the run, nor lose it
    seen: list[ev.Event] = []

    def plant(event: ev.Event) -> None:
        seen.append(event)
        if not isinstance(event, ev.RunStarted):
            return
        control = tmp_path / "run" / "control"
        (control / "0001-list.json").write_text("[1, 2]")
        (control / "0002-dir.json").mkdir()
        os.mkfifo(control / "0003-fifo.json")  # read without O_NONBLOCK, it blocked the run for ever
        (control / "0004-link.json").symlink_to(victim)
        (control / "0005-bytes.json").write_bytes(b"\xff\xfe{")
        (control / "0006-big.json").write_text(json.dumps({"command": "evaluate", "pad": "x" * 5000}))
        (control / "0007-what.json").write_text('{"command": "dance"}')
        (control / "0008-good.json").write_text('{"command": "evaluate", "sender": "mallory@box (pid 1)"}')

    trainer = Trainer(tiny_config(tmp_path, epochs=2), [plant])
    try:
        assert trainer.fit() is RunOutcome.FINISHED
    finally:
        trainer.close()
    said = [event.message for event in seen if isinstance(event, ev.Notice) and "set aside" in event.message]
    for name, why in [
        ("0001-list.json", "does not hold a JSON object"),
        ("0002-dir.json", "is not a regular file"),
        ("0003-fifo.json", "is not a regular file"),
        ("0004-link.json", "is a link"),
        ("0005-bytes.json", "is not JSON"),
        ("0006-big.json", "is larger than a request"),
        ("0007-what.json", "names no command"),
    ]:
        assert any(f"control/{name} {why}" in line for line in said), (name, said)
        assert os.path.lexists(tmp_path / "run" / "control" / f".refused-{name}")  # set aside, not deleted
    assert victim.read_text() == '{"command": "stop"}'
    acks = [event for event in seen if isinstance(event, ev.ControlAck)]
    assert [ack.command for ack in acks] == ["evaluate"]  # the one good request was served
    owner = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert acks[0].sender == f"mallory@box (pid 1) (file owned by {owner})"  # a claim is not a name


def test_a_resumed_run_clears_only_its_own_stale_requests(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    assert trainer.fit() is RunOutcome.FINISHED
    trainer.close()
    control = tmp_path / "run" / "control"
    (control / "00000000000000000001-0000beef.json").write_text('{"command": "stop"}')  # attach's, stale
    (control / "notes.txt").write_text("mine\n")
    directory = RunDirectory.claim(tiny_config(tmp_path), str(tmp_path / "run" / "last.pt"))
    directory.release()
    assert sorted(path.name for path in control.iterdir()) == ["notes.txt"]


def test_damaged_checkpoints_and_bad_numbers_are_one_line(finished_run, tmp_path, capsys):
    import torch

    payload = load_checkpoint(finished_run / "best.pt")
    payload.pop("path")
    no_classes = {key: value for key, value in payload.items() if key != "num_classes"}
    torch.save(no_classes, tmp_path / "no-classes.pt")
    torch.save({**payload, "model": {"wrong." + key: value for key, value in payload["model"].items()}},
               tmp_path / "keys.pt")  # fmt: skip
    whole = (finished_run / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    picture = tmp_path / "a.png"
    __import__("PIL.Image").Image.new("RGB", (40, 40)).save(picture)
    for name, said in [
        ("no-classes.pt", "damaged or not one of ours ('num_classes' is missing or wrong)"),
        ("keys.pt", "its weights do not fit the network it names (16 missing, e.g. classifier.1.bias; 16 unexpected"),
        ("cut.pt", "failed finding central directory); the file is cut short or damaged"),
    ]:
        for command in (["predict", "--checkpoint", str(tmp_path / name), str(picture)],
                        ["evaluate", "--checkpoint", str(tmp_path / name)]):  # fmt: skip
            assert main(command) == 2
            error = one_line_error(capsys)
            assert said in error, (command, error)
    for command, said in [
        (
            ["predict", "--checkpoint", str(finished_run), "--top", "-1", str(picture)],
            "--top: expected a whole number, 1",
        ),
        (["evaluate", "--checkpoint", str(finished_run), "--batch-size", "0"], "--batch-size: expected a whole number"),
    ]:
        assert main(command) == 2
        assert said in one_line_error(capsys)


def test_one_damaged_or_unreadable_run_never_hides_the_listing(finished_run, tmp_path, capsys, monkeypatch):
    import shutil

    from alexnet_tui import runs

    folder = tmp_path / "runs"
    shutil.copytree(finished_run, folder / "good", ignore=shutil.ignore_patterns("*.pt"))
    (folder / "bytes").mkdir()
    (folder / "bytes" / "metrics.jsonl").write_bytes(b"\xff\xfe\n" + (finished_run / "metrics.jsonl").read_bytes())
    (folder / "list").mkdir()
    (folder / "list" / "metrics.jsonl").write_text("[1, 2]\n")
    (folder / "secret").mkdir()
    (folder / "secret" / "metrics.jsonl").write_text("{}\n")
    real = runs.read_metrics

    def as_another_user(path):  # root reads every file: the mode bits of another user's run, as they act
        if "secret" in str(path):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(runs, "read_metrics", as_another_user)
    assert main(["runs", str(folder)]) == 0
    listing = capsys.readouterr().out
    assert "good" in listing and "finished" in listing  # the good run is listed
    assert "bytes" in listing  # a damaged byte spoils its line only
    assert "unreadable (Permission denied)" in listing
    assert main(["runs", "--compare", str(folder / "good"), str(folder / "secret")]) == 2
    assert "unreadable (Permission denied)" in one_line_error(capsys)


def test_links_planted_in_a_run_folder_are_refused_or_never_followed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's notes\n")
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", "run"]) == 0
    capsys.readouterr()
    for name in ("config.toml", "train.log", "metrics.jsonl"):  # planted before a resume
        kept = tmp_path / "run" / name
        kept.rename(tmp_path / f"kept-{name}")
        kept.symlink_to(victim)
        assert main(["--no-ui", "--resume", "run", "--epochs", "2"]) == 2
        assert f"run/{name} is a link" in one_line_error(capsys)
        kept.unlink()
        (tmp_path / f"kept-{name}").rename(kept)
    assert victim.read_text() == "someone's notes\n"

    def plant(event: ev.Event) -> None:  # during the run: the temp names an attacker would guess
        if isinstance(event, ev.RunStarted):
            for guess in (f".last.pt.tmp{os.getpid()}", f".best.pt.tmp{os.getpid()}", ".last.pt.0000000000000000.tmp"):
                (tmp_path / "run" / guess).symlink_to(victim)

    resumed = Trainer(tiny_config(tmp_path, out=None, resume=str(tmp_path / "run"), epochs=3), [plant])
    try:
        assert resumed.fit() is RunOutcome.FINISHED
    finally:
        resumed.close()
    assert victim.read_text() == "someone's notes\n"  # no save went through a planted link


def test_a_file_name_that_is_not_utf8_trains_and_is_said(pet_folder, tmp_path, capsys):
    """One such file (from another system's archive) stopped every run with UnicodeEncodeError."""
    import shutil

    from alexnet_tui.headless import LineReporter

    cat = pet_folder / "PetImages" / "Cat" / "0.jpg"
    odd = os.fsdecode(bytes(cat.parent) + b"/caf\xe9.jpg")
    shutil.copy(cat, odd)
    assert main(["--no-ui", "--data", str(pet_folder), "--image-size", "96", "--width", "0.0625", "--epochs", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    assert "finished in" in capsys.readouterr().out
    reporter = LineReporter()
    reporter.line(f"  0.9 Cat (true Dog): {odd}")  # as in the mistakes list
    assert not reporter.terminal_gone and "caf\ufffd.jpg" in capsys.readouterr().out


def test_a_fifo_among_the_images_and_an_unreadable_subfolder_are_counted(pet_folder, tmp_path, monkeypatch, capsys):
    """A FIFO named x.jpg hung the scan (SIGTERM ignored) and predict; a subfolder this user may not
    list was skipped without a word."""
    from alexnet_tui.data.scan import scan_folder

    cats = pet_folder / "PetImages" / "Cat"
    os.mkfifo(cats / "x.jpg")
    (cats / "locked").mkdir()
    real_scandir = os.scandir

    def as_another_user(path="."):  # root lists every folder: the mode bits of one it may not
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", as_another_user)
    scan = scan_folder(pet_folder)
    assert "Cat/x.jpg" in scan.skipped and "Cat/locked/" in scan.skipped
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert main(["predict", "--checkpoint", str(tmp_path / "nothing.pt"), str(cats / "x.jpg")]) == 2  # no checkpoint
    capsys.readouterr()
    from alexnet_tui.inference import predict_image

    line, ok = predict_image(None, {"image_size": 67, "class_names": ["Cat", "Dog"]}, str(cats / "x.jpg"), 1, None)
    assert not ok and "not a regular file" in line  # said at once, before any model is run


def test_a_reader_holding_the_lock_is_not_called_a_run(finished_run, tmp_path, capsys):
    """A shared flock taken by a reader blocked --resume with "another run (pid <dead pid>) is writing there"."""
    import fcntl
    import shutil
    import socket
    import subprocess
    import sys

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".lock").write_text(json.dumps({"pid": int(ended.stdout), "host": socket.gethostname()}))  # its run ended
    reader = os.open(run / ".lock", os.O_RDONLY)
    try:
        fcntl.flock(reader, fcntl.LOCK_SH)
        assert main(["--no-ui", "--resume", str(run), "--epochs", "3"]) == 2
        error = one_line_error(capsys)
        assert "is held by a process that is not a run" in error and "fuser" in error
    finally:
        os.close(reader)


def test_control_swapped_for_a_link_during_a_run_is_never_followed(tmp_path):
    """With control/ swapped for a link at the next batch, every *.json in the target was deleted and
    one holding {"command": "pause"} was obeyed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "00000000000000000001-0000beef.json").write_text('{"command": "pause"}')
    (elsewhere / "notes.json").write_text('{"mine": true}')
    seen: list[ev.Event] = []

    def swap(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.RunStarted):
            control = tmp_path / "run" / "control"
            control.rmdir()
            control.symlink_to(elsewhere, target_is_directory=True)

    trainer = Trainer(tiny_config(tmp_path, epochs=1), [swap])
    try:
        assert trainer.fit() is RunOutcome.FINISHED  # never paused
    finally:
        trainer.close()
    assert sorted(path.name for path in elsewhere.iterdir()) == ["00000000000000000001-0000beef.json", "notes.json"]
    said = [event.message for event in seen if isinstance(event, ev.Notice) and "not a directory" in event.message]
    assert len(said) == 1 and "run/control is not a directory of this run" in said[0]  # once, not at every batch


def test_a_full_out_disk_is_one_line_and_leaves_no_half_file(tmp_path, tmpfs, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    out = tmpfs("out", "size=3m")  # room for the data's first files, not for a checkpoint pair
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "2", "--out", str(out / "run")]) == 1
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "is intact" in errors[0]
    assert not list((out / "run").glob(".*.tmp"))  # no half-written checkpoint left behind
    for name in ("best.pt", "last.pt"):
        if (out / "run" / name).exists():
            assert load_checkpoint(out / "run" / name)["architecture"]  # whatever is there is whole


def test_a_request_left_by_another_user_is_recorded_with_its_owner(tmp_path):
    """Any user who may write the folder can claim any sender; the file's owner cannot be forged."""
    import pwd

    if os.geteuid() != 0:
        import pytest

        pytest.skip("giving a file to another user needs root (CI runs as root)")
    other = pwd.getpwuid(65534).pw_name  # nobody
    seen: list[ev.Event] = []

    def plant(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.RunStarted):
            request = tmp_path / "run" / "control" / "00000000000000000009-0000cafe.json"
            request.write_text('{"command": "evaluate", "sender": "root@vm (pid 1)"}')
            os.chown(request, 65534, 65534)

    trainer = Trainer(tiny_config(tmp_path, epochs=1), [plant])
    try:
        assert trainer.fit() is RunOutcome.FINISHED
    finally:
        trainer.close()
    acks = [event for event in seen if isinstance(event, ev.ControlAck)]
    assert [ack.sender for ack in acks] == [f"root@vm (pid 1) (file owned by {other})"]


def test_more_planted_things_are_never_followed_nor_fail_a_run(tmp_path, capsys, monkeypatch):
    """A tensorboard link on --resume, a link where evaluate writes its report, a control/ link met by
    attach's request, a directory named STOP, a bad request whose set-aside name is taken."""
    from alexnet_tui.engine.remote import RemoteControl
    from alexnet_tui.errors import UsageError

    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's notes\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["--no-ui", *TINY_ARGS, "--epochs", "1", "--out", "run"]) == 0
    capsys.readouterr()
    board = tmp_path / "run" / "tensorboard"
    if board.exists():
        __import__("shutil").rmtree(board)
    board.symlink_to(elsewhere, target_is_directory=True)
    assert main(["--no-ui", "--resume", "run", "--epochs", "2"]) == 2
    assert "run/tensorboard is a link" in one_line_error(capsys) and not list(elsewhere.iterdir())
    board.unlink()
    report = tmp_path / "run" / "evaluation-test.json"
    report.unlink()
    report.symlink_to(victim)
    assert main(["evaluate", "--checkpoint", "run"]) == 0
    assert victim.read_text() == "someone's notes\n" and not report.is_symlink()  # written beside, renamed over

    seen: list[ev.Event] = []

    def plant(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.RunStarted):
            control = tmp_path / "run2" / "control"
            (control / ".refused-0007-y.json" / "z").mkdir(parents=True)  # the set-aside name is taken
            (control / "0007-y.json").write_text("[3]")
            with __import__("pytest").raises(UsageError, match="not a directory of this run"):
                control.rename(tmp_path / "real-control")
                control.symlink_to(elsewhere, target_is_directory=True)
                RemoteControl(tmp_path / "run2").pause()  # what attach's p does
            control.unlink()
            (tmp_path / "real-control").rename(control)
            (tmp_path / "run2" / "STOP").mkdir()  # meant as a stop

    trainer = Trainer(tiny_config(tmp_path, out=str(tmp_path / "run2"), epochs=50), [plant])
    try:
        assert trainer.fit() is RunOutcome.STOPPED
    finally:
        trainer.close()
    assert not list(elsewhere.iterdir())  # no request written through the link
    said = [event.message for event in seen if isinstance(event, ev.Notice)]
    assert sum("0007-y.json" in line for line in said) == 1  # said once, not at every batch
    assert sum("run2/STOP is not a file" in line for line in said) == 1
