"""The live tables: one row per batch (the newest few hundred) and one per epoch, best marked."""

from __future__ import annotations

from collections import deque

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import Reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import DataTable

from alexnet_tui.engine import events as ev

MAX_BATCH_ROWS = 200  # older rows leave the table; every batch stays in metrics.jsonl


def rate_text(images_per_sec: float) -> str:
    """Six characters at most: a GPU's 10,000 img/s loses its decimal, not its last digit."""
    return f"{images_per_sec:.1f}" if images_per_sec < 1000 else f"{images_per_sec:.0f}"


class BatchTable(ScrollView):
    """The newest MAX_BATCH_ROWS batches, one line each, under a header that stays put.

    A Line API widget rather than a DataTable: a DataTable renders every visible cell again for each
    new row (any change invalidates its cache) and a new row lays the whole screen out again, which
    on a busy machine took the trainer thread's GIL and a core's share at every batch. Here a row is
    rendered once, kept as a Strip, and the table's fixed size (from the CSS) means growing it only
    tells its scroll bar. It follows the newest row unless the user has scrolled up."""

    DEFAULT_CSS = """
    BatchTable { background: $surface; color: $foreground; overflow-x: hidden; }
    BatchTable:focus { background-tint: $foreground 5%; }
    BatchTable > .batch-table--header { text-style: bold; background: $panel; color: $foreground; }
    BatchTable:ansi > .batch-table--header { background: ansi_bright_blue; color: ansi_default; }
    BatchTable > .batch-table--odd-row { background: $surface-lighten-1 50%; }
    """
    COMPONENT_CLASSES = {"batch-table--header", "batch-table--odd-row"}
    # Fixed widths: the columns never jump as rows of other widths arrive (and screenshots are stable).
    COLUMNS = (("epoch", 9), ("batch", 9), ("loss", 7), ("acc", 7), ("run loss", 8), ("run acc", 7), ("img/s", 6),
               ("lr", 8))  # fmt: skip
    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)  # see watch_virtual_size

    def __init__(self) -> None:
        super().__init__(id="batches")
        self.rows: deque[tuple[str, ...]] = deque(maxlen=MAX_BATCH_ROWS)
        self.dropped = 0  # rows that left the top: the stripes stay with their rows as the table scrolls
        self.strips: dict[int, Strip] = {}  # a rendered row by its number since the start (dropped + index)
        self.line_width = sum(width + 2 for _, width in self.COLUMNS)
        self.following = True  # keep the newest row in view; off while the user has scrolled up

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def get_row_at(self, index: int) -> list[str]:
        return list(self.rows[index])

    def add_batches(self, rows: list[ev.BatchEnd]) -> None:
        """Many rows in one go: the drain hands over everything since the last screen update."""
        dropped = 0
        for row in rows[-MAX_BATCH_ROWS:]:
            if len(self.rows) == MAX_BATCH_ROWS:
                self.strips.pop(self.dropped, None)
                self.dropped += 1
                dropped += 1
            self.rows.append(
                (
                    f"{row.epoch}/{row.epochs}",
                    f"{row.batch}/{row.batches}",
                    f"{row.loss:.5f}",
                    f"{row.acc:.5f}",
                    f"{row.running_loss:.5f}",
                    f"{row.running_acc:.5f}",
                    rate_text(row.images_per_sec),
                    f"{row.lr:.2e}" if row.lr is not None else "-",
                )
            )
        self.virtual_size = Size(self.line_width, len(self.rows) + 1)  # + the header
        if self.following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        elif dropped:  # the rows the user reads stay where they are as older ones leave the top
            self.scroll_to(y=max(0, self.scroll_y - dropped), animate=False, immediate=True)
        self.refresh()

    def on_resize(self) -> None:
        if self.following:  # a new height moves the end; rows may not come again to scroll there
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value >= self.max_scroll_y:  # at the end (the user scrolled there, or a taller table)
            self.following = True
        elif new_value < old_value:  # only the user scrolls up: this table only ever scrolls to the end
            self.following = False

    def clear(self) -> None:
        self.rows.clear()
        self.strips.clear()
        self.dropped = 0
        self.virtual_size = Size(self.line_width, 1)
        self.scroll_to(y=0, animate=False, immediate=True)
        self.following = True
        self.refresh()

    def watch_virtual_size(self, size: Size) -> None:
        """A repaint and the scroll bar told, instead of the layout a change of virtual size asks for
        by default (the scroll bar's first appearance still makes one, through Textual)."""
        if self.is_mounted and self.container_size:
            self._scroll_update(size)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.strips.clear()  # a theme change: render the rows again

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            cells = tuple(label for label, _ in self.COLUMNS)
            return self.render_cells(cells, self.get_component_rich_style("batch-table--header"), width)
        index = int(self.scroll_y) + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        number = self.dropped + index
        strip = self.strips.get(number)
        if strip is None or strip.cell_length != width:
            style = self.rich_style
            if number % 2:
                style += self.get_component_rich_style("batch-table--odd-row")
            strip = self.strips[number] = self.render_cells(self.rows[index], style, width)
        return strip

    def render_cells(self, cells: tuple[str, ...], style: Style, width: int) -> Strip:
        text = "".join(f" {cell[:size]:<{size}} " for cell, (_, size) in zip(cells, self.COLUMNS, strict=True))
        return Strip([Segment(text, style)]).adjust_cell_length(width, style)


class EpochTable(DataTable):
    COLUMNS = (("epoch", 5), ("loss", 7), ("acc", 7), ("val_loss", 8), ("val_acc", 7), ("img/s", 6), ("sec", 6),
               ("best", 4))  # fmt: skip

    def __init__(self) -> None:
        super().__init__(id="epochs", cursor_type="none")
        self.best_row: str | None = None

    def on_mount(self) -> None:
        for label, width in self.COLUMNS:
            self.add_column(label, key=label, width=width)

    def add_epoch(self, event: ev.EpochEnd) -> None:
        if event.best and self.best_row is not None:
            self.update_cell(self.best_row, "best", "")
        key = f"epoch-{event.epoch}-{self.row_count}"
        self.add_row(
            f"{event.epoch}",
            f"{event.train_loss:.5f}",
            f"{event.train_acc:.5f}",
            f"{event.val_loss:.5f}",
            f"{event.val_acc:.5f}",
            rate_text(event.images_per_sec),
            f"{event.seconds:.1f}",
            "*" if event.best else "",
            key=key,
        )
        if event.best:
            self.best_row = key
        self.call_after_refresh(self.scroll_end, animate=False)

    def add_evaluation(self, event: ev.EvaluationEnd) -> None:
        """A requested evaluation ("eval") or the final report on best.pt (its split)."""
        label = event.split if event.checkpoint else "eval"
        self.add_row(label, "", "", f"{event.loss:.5f}", f"{event.acc:.5f}", "", "", "")
        self.call_after_refresh(self.scroll_end, animate=False)

    def reset(self) -> None:
        self.clear()
        self.best_row = None
