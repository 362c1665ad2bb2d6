"""The real program in a pty, its screen read back through pyte: what a person sees at launch on
odd terminals, when keys come early, and the Predict and Report tabs after a tiny demo run."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_tui.paths import cache_dir
from tests.conftest import TINY_ARGS
from tests.terminal import Terminal

RUN = [*TINY_ARGS, "--epochs", "1", "--out", "run"]
HELP = "alexnet-tui keys"  # the Help screen's heading
STARTED = re.compile(r"TRAINING|EVALUATING|FINISHED")  # s was taken: the run went on from idle
BROKEN = ("Traceback", "ZeroDivisionError", "TimeoutError")

pytestmark = pytest.mark.timeout(90)


def assert_clean(term: Terminal) -> None:
    """No traceback on the terminal nor in the log fd 2 goes to while the screen runs."""
    stderr_log = cache_dir() / "tui-stderr.log"
    logged = stderr_log.read_text(errors="replace") if stderr_log.exists() else ""
    for word in BROKEN:
        assert word not in term.output(), term.output()[-3000:]
        assert word not in logged, logged[-3000:]


def test_a_0x0_terminal_that_never_answers_starts_cleanly_s_works_and_q_quits(tmp_path):
    # Textual (through shutil.get_terminal_size) draws a 0x0 window at 80x24; the picture library's
    # import divided by the 0 columns before the screen ever came up, and a terminal that never
    # answers its queries printed a TimeoutError at every start.
    with Terminal(RUN, size=(0, 0), cwd=tmp_path, answers="never") as term:
        term.wait_for("IDLE", timeout=30)
        term.press("s")
        term.wait_for(lambda text: STARTED.search(text) is not None, timeout=30)
        term.wait_for("FINISHED", timeout=60)
        term.press("q")
        assert term.wait_exit() == 0
    assert_clean(term)


@pytest.mark.parametrize("answers", ["now", "late"])
def test_s_pressed_half_a_second_after_launch_starts_training(tmp_path, answers):
    """A person types s as soon as the command is entered; a terminal's answers (at once, or late
    as over a slow SSH link) must not eat the key nor become keys of their own (`?` opened Help)."""
    seen_help = []

    def started(text: str) -> bool:
        seen_help.append(HELP in text)
        return STARTED.search(text) is not None

    with Terminal(RUN, cwd=tmp_path, answers=answers) as term:
        time.sleep(0.5)  # the moment is the point of this test: no event to wait for yet
        term.press("s")
        term.wait_for(started, timeout=30)
        assert not any(seen_help), "the Help screen opened"
        assert HELP not in term.screen_text()
    assert_clean(term)


def a_photo(path: Path) -> Path:
    pixels = (np.random.default_rng(3).random((70, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def finished_run(term: Terminal) -> None:
    term.wait_for("IDLE", timeout=30)
    term.press("s")
    term.wait_for("FINISHED", timeout=60)


ANSWER = re.compile(r"(checks|spots|stripes) [01]\.\d{3}")
PICTURE = "▀"  # half-blocks: each cell two pixels of the picture


def beside_the_picture(text: str) -> str:
    """What the screen's rows that show the picture hold to its left, read as one text (the answer
    wraps over rows: "stripes" may end one row and "0.338" begin the next)."""
    return " ".join(line[: line.index(PICTURE)].strip() for line in text.splitlines() if PICTURE in line)


def assert_answer_beside_picture(text: str, photo: Path) -> None:
    assert len(ANSWER.findall(beside_the_picture(text))) == 3, text
    assert f"{photo.name}:" in beside_the_picture(text).replace(" ", ""), text  # its file, folded over rows maybe


def test_log_lines_use_the_screen_width_and_the_prediction_is_beside_its_picture(tmp_path):
    """One run at 100x30, then 80x24: Log lines said while the Log tab was hidden wrapped at ~72
    columns; Predict's answer was drawn one column wide, out of sight, beside its picture."""
    photo = a_photo(tmp_path / "photo.jpg")
    with Terminal(RUN, cwd=tmp_path, size=(100, 30)) as term:
        term.wait_for("IDLE", timeout=30)
        term.press("6")  # the Log tab shown once (it has a size), then hidden while the run speaks
        term.wait_for(lambda text: "Log" in text and "image size" not in text)
        term.press("1")
        finished_run(term)
        term.press("6")
        text = term.wait_for("recipe: --lr", timeout=30)
        widest = max(len(line.rstrip()) for line in text.splitlines()[3:-2])  # the log's own rows
        assert widest > 85, text

        term.press("4")  # the Predict tab: its field takes focus as the tab opens
        term.wait_for("image path")
        term.type(str(photo))
        term.press("enter")
        text = term.wait_for(lambda text: len(ANSWER.findall(beside_the_picture(text))) == 3, timeout=30)
        assert_answer_beside_picture(text, photo)
        term.resize_window(80, 24)  # the smallest screen the layout is made for: the answer stays in view
        text = term.wait_for(lambda text: len(ANSWER.findall(beside_the_picture(text))) == 3, timeout=30)
        assert_answer_beside_picture(text, photo)
    assert_clean(term)


def test_after_a_finish_the_report_tab_shows_the_test_report_and_its_gallery_and_q_says_where_it_is(tmp_path):
    with Terminal(RUN, cwd=tmp_path) as term:  # 80x24: the smallest screen the layout is made for
        finished_run(term)
        term.press("5")  # the final report (test split) is on the Report tab by now
        text = term.wait_for(lambda text: "predicted " in text and re.search(r"#\d+ in test", text), timeout=30)
        assert re.search(r"test split: \d+ images, loss \d\.\d{5}, accuracy \d\.\d{5}", text), text
        lines = text.splitlines()
        caption = next(i for i, line in enumerate(lines) if re.search(r"predicted \w+ \([01]\.\d{3}\)", line))
        assert re.search(r"true \w+", lines[caption + 1]), text
        assert "generated demo image" in lines[caption + 2], text  # the demo's picture, regenerated
        column = lines[caption].index("predicted ")
        picture_rows = [line for line in lines[caption + 3 :] if PICTURE in line[column:]]
        assert picture_rows, text  # the picture right under its caption, in the same column
        term.press("q")
        assert term.wait_exit() == 0
        assert "run run finished: alexnet-tui evaluate --checkpoint run" in term.output()
    assert (tmp_path / "run" / "evaluation-test.json").exists()
    assert_clean(term)


def test_a_path_typed_on_the_predict_tab_starts_no_run(tmp_path):
    """Typing x3s/a.jpg switched to Charts, started a run and stopped it when the field had no focus."""
    with Terminal(RUN, cwd=tmp_path) as term:
        term.wait_for("IDLE", timeout=30)
        term.press("4")
        term.wait_for("image path")
        term.type("x3s/a.jpg")
        text = term.wait_for("x3s/a.jpg")
        assert "IDLE" in text and "image path" in text  # still idle, still on the Predict tab
        assert "esc" in text.splitlines()[-1]  # the footer says how to give the keys back
        time.sleep(0.5)  # a started run would show within a drain or two: nothing to wait for here
        assert "IDLE" in term.screen_text() and not (tmp_path / "run").exists()
    assert_clean(term)
