"""A RichLog of plain lines that wraps them again when its width changes."""

from __future__ import annotations

from collections import deque

from textual.events import Resize
from textual.widgets import RichLog


class ReflowLog(RichLog):
    """RichLog lays a line out once, at the width it has when the line is written: a window made
    narrower cut lines short (Predict's answer lost its last class), one made wider kept them
    narrow. This one keeps its texts (as many as it shows) and lays them out again on a resize."""

    def __init__(self, *, max_lines: int, id: str | None = None, min_width: int = 78) -> None:
        super().__init__(id=id, wrap=True, markup=False, max_lines=max_lines, min_width=min_width)
        self.texts: deque[str] = deque(maxlen=max_lines)
        self.laid_out_width = 0

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.write(text)

    def on_resize(self, event: Resize) -> None:
        # Runs before RichLog's own handler, which writes what came before the size was known.
        width = event.size.width
        if self._size_known and width and width != self.laid_out_width:
            self.clear()
            for text in self.texts:
                self.write(text)
        if width:
            self.laid_out_width = width
