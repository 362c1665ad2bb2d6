"""Pictures without terminal queries (alexnet_tui.ui.pictures), demo pictures from a report's names
(alexnet_tui.data.demo), and the report's picture and colour choices built on them."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
from PIL import Image
from textual.app import App, ComposeResult

from alexnet_tui.config import TrainConfig, to_toml
from alexnet_tui.data.demo import demo_index, demo_picture, demo_settings
from alexnet_tui.data.loading import load_data
from alexnet_tui.report_html import render_html
from alexnet_tui.ui.pictures import DEFAULT_CELL, HalfBlocks, PictureView, cell_pixels, choose_renderer, fit
from alexnet_tui.ui.widgets.report import RIGHT_FILLED, WRONG_FILLED, confusion_cell
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({"TERM": "xterm-256color"}, True, "halfcell"),
        ({"TERM": "xterm-kitty"}, True, "tgp"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, True, "tgp"),
        ({"TERM": "xterm-ghostty"}, True, "tgp"),
        ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"}, True, "halfcell"),
        ({"TERM": "screen-256color", "KITTY_WINDOW_ID": "1"}, True, "halfcell"),
        ({"TERM": "xterm-kitty", "STY": "1.pts-0.host"}, True, "halfcell"),
        ({"TERM": "xterm-kitty", "TEXTUAL_DRIVER": "textual.drivers.web_driver:WebDriver"}, False, "halfcell"),
        ({"TERM": "xterm-kitty"}, False, "halfcell"),  # a pipe or a file: screenshots, logs
        ({"TERM": "dumb"}, True, "none"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, True, "halfcell"),
        ({"TERM": "xterm-kitty", "ALEXNET_TUI_PICTURES": "none"}, True, "none"),
        ({"TERM": "xterm-256color", "ALEXNET_TUI_PICTURES": "TGP"}, True, "tgp"),
        ({"TERM": "xterm-256color", "ALEXNET_TUI_PICTURES": "sixel"}, True, "halfcell"),  # unknown: guessed
    ],
)
def test_the_renderer_is_chosen_from_the_environment_alone(env, tty, expected):
    assert choose_renderer(env, tty) == expected


def run_python(code: str, window: tuple[int, int, int, int] = (0, 0, 0, 0)) -> tuple[str, bytes]:
    """`code` in a fresh interpreter whose stdin and stdout are a pty of `window` (rows, columns,
    pixel width, pixel height) that never answers: (what it printed on stderr, every byte it wrote
    to the terminal). A query would show in those bytes; waiting for an answer would time out."""
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *window))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1"},
    )  # fmt: skip
    os.close(slave)
    written = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                written += os.read(master, 65536)
            except OSError:
                break
        elif process.poll() is not None:
            break
    stderr = process.communicate(timeout=30)[1].decode()
    os.close(master)
    assert process.returncode == 0, stderr
    return stderr, written


def test_the_app_module_imports_no_picture_library():
    stderr, written = run_python(
        "import sys, alexnet_tui.ui.app\n"
        "print('loaded:', sorted(m for m in sys.modules if m.startswith('textual_image')))"
    )
    assert "loaded: []" in written.decode()
    assert b"\x1b" not in written and "Traceback" not in stderr  # no query at import, on a 0x0 terminal too


def test_the_kitty_renderer_is_imported_without_a_query_even_on_a_0x0_terminal():
    code = (
        "from alexnet_tui.ui.pictures import kitty_renderable\n"
        "from textual_image._terminal import get_cell_size\n"
        "print('renderable:', kitty_renderable().__module__, 'cell:', tuple(get_cell_size()))"
    )
    stderr, written = run_python(code)
    assert f"renderable: textual_image.renderable.tgp cell: {DEFAULT_CELL}" in written.decode(), stderr
    assert b"\x1b" not in written  # no DA1, no Kitty probe, no CSI 16 t
    assert "Traceback" not in stderr and "ZeroDivisionError" not in stderr


def test_the_cell_size_comes_from_the_window_or_a_default():
    master, slave = os.openpty()
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        assert cell_pixels(slave, env={}) == DEFAULT_CELL  # 0x0: no division by zero
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        assert cell_pixels(slave, env={"TEXTUAL_CELL_WIDTH": "9", "TEXTUAL_CELL_HEIGHT": "18"}) == (9, 18)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 640, 384))
        assert cell_pixels(slave, env={}) == (8, 16)
    finally:
        os.close(master)
        os.close(slave)
    read, write = os.pipe()
    assert cell_pixels(write, env={}) == DEFAULT_CELL  # not a terminal at all
    os.close(read)
    os.close(write)


def test_fit_keeps_the_aspect_within_the_area():
    assert fit((160, 160), (36, 32)) == (32, 32)
    assert fit((200, 100), (40, 40)) == (40, 20)
    assert fit((10, 10), (80, 30)) == (30, 30)  # small pictures grow to the space
    assert fit((1000, 1), (10, 10)) == (10, 1)  # never below one cell
    assert fit((100, 100), (0, 0)) == (0, 0) and fit((0, 0), (10, 10)) == (0, 0)


def two_colours(width: int = 20, height: int = 20) -> Image.Image:
    """Red on top, blue below."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[: height // 2, :, 0] = 255
    pixels[height // 2 :, :, 2] = 255
    return Image.fromarray(pixels)


def test_half_blocks_fill_the_space_with_the_pictures_colours():
    lines = HalfBlocks(two_colours(), 30, 5).lines()
    assert len(lines) == 5  # 10 pixel rows fill the 5 cells' height; 10 columns, centred in 30
    assert lines[0][0].text == " " * 10 and sum(len(s.text) for s in lines[0][1:]) == 10
    top = lines[0][1].style
    assert (top.color.triplet.hex, top.bgcolor.triplet.hex) == ("#ff0000", "#ff0000")
    assert lines[4][1].style.bgcolor.triplet.hex == "#0000ff"
    assert HalfBlocks(two_colours(), 0, 5).lines() == []


class PictureApp(App):
    def compose(self) -> ComposeResult:
        yield PictureView(id="picture")


@pytest.mark.asyncio
async def test_a_picture_exports_to_svg_as_coloured_cells_and_tolerates_bad_sources(tmp_path):
    app = PictureApp()
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(PictureView)
        assert view.renderer == "halfcell"  # headless: screenshots never get terminal graphics
        view.image = two_colours()
        await pilot.pause()
        svg = app.export_screenshot()
        assert "#ff0000" in svg and "#0000ff" in svg  # drawn colours, not a grey placeholder box
        path = tmp_path / "picture.png"
        two_colours().save(path)
        view.image = path
        await pilot.pause()
        assert view.image == path and "#ff0000" in app.export_screenshot()
        (tmp_path / "broken.jpg").write_bytes(b"not a picture")
        for nothing in (tmp_path / "broken.jpg", tmp_path / "missing.jpg", None):
            view.image = nothing
            await pilot.pause()
            assert "#ff0000" not in app.export_screenshot()
        await pilot.resize_terminal(0, 0)  # no room at all: nothing to draw, nothing raised
        view.image = two_colours()
        await pilot.pause()


def demo_config(tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(data="demo", demo_size=60, image_size=67, seed=5, out=str(tmp_path), **overrides)


def test_a_demo_reference_gives_back_the_pixels_the_model_saw(tmp_path):
    config = demo_config(tmp_path)
    bundle = load_data(config)
    settings = config.to_dict()
    for split, dataset in (("val", bundle.val), ("test", bundle.test)):
        for position in range(len(dataset)):
            picture = demo_picture(f"#{position}", split, settings)
            assert picture is not None and picture.size == (67, 67)
            assert np.array_equal(np.asarray(picture).transpose(2, 0, 1), dataset[position][0].numpy())
            index = demo_index(f"#{position}", split, settings)  # what a report records for viewers
            by_index = demo_picture("ignored", split, settings, index)  # drawn with numpy alone
            assert np.array_equal(np.asarray(by_index), np.asarray(picture))
    assert demo_picture(f"#{len(bundle.val)}", "val", settings) is None  # past the split's end
    assert demo_picture("cats/1.jpg", "val", settings) is None
    assert demo_picture("#1", "", settings) is None and demo_picture("#1", "val", None) is None
    assert demo_picture("#1", "val", {"seed": "x"}) is None


def test_demo_settings_come_from_the_report_or_the_run_folder(tmp_path):
    config = demo_config(tmp_path)
    (tmp_path / "config.toml").write_text(to_toml(config))
    report_path = tmp_path / "evaluation-test.json"
    assert demo_settings({}, report_path)["seed"] == 5  # config.toml beside the report
    assert demo_settings({"checkpoint": str(tmp_path / "best.pt")})["demo_size"] == 60  # beside its checkpoint
    assert demo_settings({"demo": {"seed": 9}}, report_path) == {"seed": 9}  # the report's own word first
    assert demo_settings({}, tmp_path / "elsewhere" / "evaluation-val.json") is None


def test_the_html_report_shows_demo_pictures(tmp_path):
    config = demo_config(tmp_path)
    (tmp_path / "config.toml").write_text(to_toml(config))
    report = {
        "checkpoint": str(tmp_path / "best.pt"), "data": "demo", "split": "val", "images": 6, "loss": 1.0,
        "accuracy": 0.5, "class_names": ["checks", "spots", "stripes"],
        "per_class": {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
                      for name in ("checks", "spots", "stripes")},
        "confusion_matrix": [[2, 0, 0], [1, 1, 0], [0, 2, 0]],
        "most_confident_mistakes": [
            {"image": "#3", "true": "spots", "predicted": "checks", "confidence": 0.9},
            {"image": str(tmp_path / "gone.jpg"), "true": "spots", "predicted": "checks", "confidence": 0.8},
        ],
    }  # fmt: skip
    page = render_html(report)
    assert page.count("<img src='data:image/jpeg;base64,") == 1  # the demo image, drawn
    assert page.count("no picture") == 1  # the missing file still says so


def test_confusion_cells_are_readable_green_right_red_wrong():
    assert confusion_cell(9, 10, diagonal=True).style == RIGHT_FILLED == "bold #000000 on #4caf50"
    assert confusion_cell(6, 10, diagonal=False).style == WRONG_FILLED == "bold #ffffff on #b62324"
    assert "on" not in str(confusion_cell(1, 10, diagonal=True).style)  # a small share: coloured text only
    assert confusion_cell(0, 10, diagonal=False).style == "dim"
