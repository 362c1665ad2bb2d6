"""The Report tab: the last evaluation report as a coloured confusion matrix and a browsable
gallery of the most confident mistakes (the picture, true class, predicted class, confidence)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Static
from textual_image.widget import Image as Picture


def confusion_cell(count: int, row_total: int, diagonal: bool) -> Text:
    """Green for right answers, red for mistakes; stronger for a larger share of the true class."""
    share = count / max(row_total, 1)
    colour = "green" if diagonal else "red"
    style = f"bold white on {colour}" if share >= 0.5 else (f"{colour}" if count else "dim")
    return Text(str(count), style=style, justify="right")


class ReportPane(Vertical):
    DEFAULT_CSS = """
    ReportPane { padding: 0 1; }
    ReportPane #report-summary { height: auto; }
    ReportPane #confusion { height: auto; max-height: 12; margin-bottom: 1; }
    ReportPane #gallery { height: 1fr; }
    ReportPane #mistakes { width: 1fr; }
    ReportPane #mistake-view { width: 40; }
    ReportPane Picture { width: 36; height: 16; }
    """

    def __init__(self) -> None:
        super().__init__(id="report-view")
        self.mistakes: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Label("no evaluation report yet: press e (or run alexnet-tui evaluate)", id="report-summary")
        yield DataTable(id="confusion", cursor_type="none")
        with Horizontal(id="gallery"):
            yield DataTable(id="mistakes", cursor_type="row")
            with Vertical(id="mistake-view"):
                yield Picture(id="mistake-picture")
                yield Static("", id="mistake-caption")

    def load(self, path: Path) -> None:
        """Show the report written at `path` (evaluation-SPLIT.json)."""
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            self.query_one("#report-summary", Label).update(f"cannot read {path} ({error})")
            return
        self.show(report, path)

    def show(self, report: dict[str, Any], path: Path) -> None:
        names = report["class_names"]
        self.query_one("#report-summary", Label).update(
            f"{report.get('split', '')} split: {report['images']} images, loss {report['loss']:.5f}, "
            f"accuracy {report['accuracy']:.5f}  ({path})"
        )
        confusion = self.query_one("#confusion", DataTable)
        confusion.clear(columns=True)
        confusion.add_columns("true \\ predicted", *(name[:10] for name in names))
        for index, (name, row) in enumerate(zip(names, report["confusion_matrix"], strict=True)):
            total = sum(row)
            confusion.add_row(name[:16], *(confusion_cell(count, total, col == index) for col, count in enumerate(row)))
        self.mistakes = report["most_confident_mistakes"]
        table = self.query_one("#mistakes", DataTable)
        table.clear(columns=True)
        table.add_columns("confidence", "predicted", "true", "image")
        for mistake in self.mistakes:
            table.add_row(
                f"{mistake['confidence']:.3f}", mistake["predicted"], mistake["true"], Path(mistake["image"]).name
            )
        if self.mistakes:
            self.show_mistake(0)

    @on(DataTable.RowHighlighted, "#mistakes")
    def highlighted(self, message: DataTable.RowHighlighted) -> None:
        self.show_mistake(message.cursor_row)

    def show_mistake(self, index: int) -> None:
        mistake = self.mistakes[index]
        picture = self.query_one("#mistake-picture", Picture)
        image = Path(mistake["image"])
        picture.image = image if image.is_file() else None
        where = str(image) if image.is_file() else f"{mistake['image']} (no file: a generated demo image)"
        caption = Text.assemble(
            "predicted ", (mistake["predicted"], "bold"), f" ({mistake['confidence']:.3f})\n",
            f"true {mistake['true']}\n", (where, "dim"),
        )  # fmt: skip
        self.query_one("#mistake-caption", Static).update(caption)
