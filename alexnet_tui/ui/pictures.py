"""Pictures in the terminal without asking the terminal anything.

textual-image picks its renderer at import by writing queries (DA1, a Kitty graphics probe, CSI 16 t)
and reading the answers from stdin: a slow answer then reaches Textual as key presses (`?` opened
Help, the first `s` was lost), a terminal that never answers printed a TimeoutError traceback, and a
0x0 terminal divided by zero. Here the renderer is chosen from what the environment already says,
and the picture is drawn as half-blocks by this module (each cell's upper and lower pixel as its
foreground and background colour: any colour terminal, Textual's SVG screenshots and the browser
view draw them). Only in Kitty-protocol terminals is textual-image used, imported on first use
inside the running app, with what it would ask for set beforehand, so it never queries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import sys
import termios
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.app import RenderResult as WidgetRender
from textual.widget import Widget

Renderer = Literal["halfcell", "tgp", "none"]
RENDERERS: tuple[Renderer, ...] = ("halfcell", "tgp", "none")
CHOICE_VARIABLE = "ALEXNET_TUI_PICTURES"  # halfcell, tgp or none: a person's override of the guess
DEFAULT_CELL = (10, 20)  # pixels of a cell when the terminal does not say (textual-image's VT340 guess)
PictureSource = Image.Image | str | Path | None

log = logging.getLogger(__name__)


def choose_renderer(env: Mapping[str, str] | None = None, tty: bool | None = None) -> Renderer:
    """The way to draw pictures, from the environment alone (no query): Kitty's graphics protocol
    where the terminal is known to show its placeholders (Kitty, Ghostty, not inside a multiplexer),
    nothing on a dumb terminal, half-blocks everywhere else."""
    env = os.environ if env is None else env
    forced = env.get(CHOICE_VARIABLE, "").strip().lower()
    if forced in RENDERERS:
        return forced  # type: ignore[return-value]  # checked against RENDERERS
    if tty is None:
        tty = bool(sys.__stdout__ and sys.__stdout__.isatty())
    term = env.get("TERM", "")
    if env.get("TEXTUAL_DRIVER") or not tty:  # textual-serve's browser, a pipe, a screenshot
        return "halfcell"
    if term == "dumb":
        return "none"
    if env.get("TMUX") or env.get("STY") or term.startswith(("screen", "tmux")):
        return "halfcell"  # graphics do not pass a multiplexer by default; half-blocks always do
    if env.get("KITTY_WINDOW_ID") or term == "xterm-kitty" or term == "xterm-ghostty":
        return "tgp"
    if env.get("TERM_PROGRAM", "").lower() == "ghostty":
        return "tgp"
    return "halfcell"  # WezTerm and Konsole speak the protocol but not its placeholders (textual-image's note)


@cache
def process_renderer() -> Renderer:
    """The choice for this process's terminal, made once."""
    return choose_renderer()


def cell_pixels(fd: int | None = None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """A cell's (width, height) in pixels: the window's pixel size over its cells where the
    terminal fills both in (TIOCGWINSZ), textual-serve's variables, else DEFAULT_CELL. A 0x0 window
    or a pipe never divides by zero."""
    env = os.environ if env is None else env
    try:
        if fd is None:
            fd = sys.__stdout__.fileno() if sys.__stdout__ else -1
        rows, columns, width, height = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    except (OSError, ValueError, AttributeError):
        rows = columns = width = height = 0
    if rows and columns and width >= columns and height >= rows:
        return width // columns, height // rows
    cell_width, cell_height = env.get("TEXTUAL_CELL_WIDTH", ""), env.get("TEXTUAL_CELL_HEIGHT", "")
    if cell_width.isdigit() and cell_height.isdigit() and int(cell_width) and int(cell_height):
        return int(cell_width), int(cell_height)
    return DEFAULT_CELL


def fit(source: tuple[int, int], area: tuple[int, int]) -> tuple[int, int]:
    """The largest (width, height) of `source`'s aspect within `area`, at least 1x1 (0 for no area)."""
    (width, height), (room_width, room_height) = source, area
    if min(width, height, room_width, room_height) <= 0:
        return 0, 0
    scale = min(room_width / width, room_height / height)
    return max(1, min(room_width, round(width * scale))), max(1, min(room_height, round(height * scale)))


def open_picture(source: PictureSource) -> Image.Image | None:
    """An RGB copy of the picture (a PIL image, or a file), or None when there is none or it
    cannot be read: a broken file shows no picture rather than an error."""
    if source is None:
        return None
    try:
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


class HalfBlocks:
    """A Rich renderable: `image` fitted (aspect kept) into `width` x `height` cells, centred across,
    two pixels a cell ('▀': upper pixel as the foreground colour, lower as the background)."""

    def __init__(self, image: Image.Image, width: int, height: int) -> None:
        self.image, self.width, self.height = image, width, height

    def lines(self) -> list[list[Segment]]:
        columns, rows = fit(self.image.size, (self.width, 2 * self.height))
        if not columns:
            return []
        rows += rows % 2  # whole cells
        pixels = self.image.resize((columns, rows), Image.Resampling.BOX if columns < self.image.width else None)
        data = pixels.load()
        indent = Segment(" " * ((self.width - columns) // 2)) if columns < self.width else None
        lines = []
        for top in range(0, rows, 2):
            line = [indent] if indent else []
            for x in range(columns):
                upper, lower = data[x, top], data[x, min(top + 1, pixels.height - 1)]
                line.append(Segment("▀", Style(color=_rgb(upper), bgcolor=_rgb(lower))))
            lines.append(line)
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines():
            yield from line
            yield Segment.line()


def _rgb(pixel: Any) -> str:
    red, green, blue = pixel[:3]
    return f"#{red:02x}{green:02x}{blue:02x}"


class _NotATerminal:
    """sys.__stdout__ as textual-image's import sees it: not a tty, so it sends no queries."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@cache
def kitty_renderable() -> type | None:
    """textual-image's Kitty-protocol renderable, imported without one query (None if that fails).
    Its package asks the terminal at import unless stdout is not a tty, and its renderers ask for
    the cell size (ioctl, then CSI 16 t) unless it is cached: both are arranged here first."""
    try:
        from textual_image import _terminal

        _terminal.get_cell_size._result = _terminal.CellSize(*cell_pixels())  # type: ignore[attr-defined]
        saved = sys.__stdout__
        sys.__stdout__ = _NotATerminal(saved)  # type: ignore[assignment]
        try:
            from textual_image.renderable.tgp import Image as KittyImage
        finally:
            sys.__stdout__ = saved  # type: ignore[assignment]
    except Exception:  # noqa: BLE001 - a nicety: any failure means half-blocks, never a crash
        log.warning("textual-image unavailable; pictures as half-blocks", exc_info=True)
        return None
    return KittyImage


class PictureView(Widget):
    """A picture fitted into the widget's size, its aspect kept; `image` takes a PIL image, a file
    path or None (a file that cannot be read shows nothing). Sized by its container's CSS."""

    DEFAULT_CSS = "PictureView { width: 1fr; height: 1fr; }"

    def __init__(self, image: PictureSource = None, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._source: PictureSource = None
        self._pixels: Image.Image | None = None
        self._drawn: tuple[tuple[int, int], Any] | None = None  # (size, renderable) of the last draw
        self.image = image

    @property
    def image(self) -> PictureSource:
        """What was given (a test or a caller can tell which picture is shown)."""
        return self._source

    @image.setter
    def image(self, source: PictureSource) -> None:
        self._source, self._pixels = source, open_picture(source)
        self._forget()
        self.refresh()

    @property
    def renderer(self) -> Renderer:
        """Half-blocks in tests and screenshots (a headless app), else the terminal's choice."""
        if self.is_attached and (self.app.is_headless or self.app.is_web):
            return "halfcell"
        return process_renderer()

    def render(self) -> WidgetRender:
        width, height = self.size
        if self._pixels is None or width <= 0 or height <= 0 or self.renderer == "none":
            return ""
        if self._drawn is not None and self._drawn[0] == (width, height):
            return self._drawn[1]
        self._forget()
        renderable = self._kitty(width, height) if self.renderer == "tgp" else None
        if renderable is None:
            renderable = HalfBlocks(self._pixels, width, height)
        self._drawn = ((width, height), renderable)
        return renderable

    def _kitty(self, width: int, height: int) -> Any:
        kitty = kitty_renderable()
        if kitty is None or self._pixels is None:
            return None
        cell_width, cell_height = cell_pixels()
        pixel_width, pixel_height = self._pixels.size
        columns, rows = fit((pixel_width * cell_height, pixel_height * cell_width), (width, height))
        try:
            return kitty(self._pixels, columns, rows)
        except Exception:  # noqa: BLE001 - textual-image refuses some sizes; half-blocks then
            return None

    def _forget(self) -> None:
        """Drop the last draw; a Kitty image is also deleted from the terminal's memory."""
        if self._drawn is not None and hasattr(self._drawn[1], "cleanup"):
            with contextlib.suppress(Exception):  # a dead terminal cannot be told; nothing to free then
                self._drawn[1].cleanup()
        self._drawn = None

    def on_unmount(self) -> None:
        self._forget()
