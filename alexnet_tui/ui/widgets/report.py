"""The Report tab: the last evaluation report as a coloured confusion matrix and a browsable
gallery of the most confident mistakes (the picture, true class, predicted class, confidence)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Static

from alexnet_tui.paths import printable
from alexnet_tui.ui.pictures import PictureView

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Green for right answers, red for mistakes. A cell holding half its row or more is filled, with the
# darker text a light fill needs and the lighter text a dark fill needs (both above 7:1 contrast);
# a smaller share is coloured text on the table's own background.
RIGHT_FILLED, WRONG_FILLED = "bold #000000 on #4caf50", "bold #ffffff on #b62324"
RIGHT_TEXT, WRONG_TEXT = "#5fd068", "#ff6b6b"


def confusion_cell(count: int, row_total: int, diagonal: bool) -> Text:
    """One cell of the matrix, styled by its share of the true class's images."""
    share = count / max(row_total, 1)
    if not count:
        style = "dim"
    elif share >= 0.5:
        style = RIGHT_FILLED if diagonal else WRONG_FILLED
    else:
        style = RIGHT_TEXT if diagonal else WRONG_TEXT
    return Text(str(count), style=style, justify="right")


IMAGE_NAME_CELLS = 14  # what the image column has beside the picture at 80 columns


def name_tail(name: str) -> str:
    """A file name cut at its start, where names in one folder share a prefix (cat.0.jpg, cat.1.jpg)
    and the number that tells them apart is at the end."""
    name = printable(name)
    return name if len(name) <= IMAGE_NAME_CELLS else "…" + name[-(IMAGE_NAME_CELLS - 1) :]


class ReportPane(Vertical):
    DEFAULT_CSS = """
    ReportPane { padding: 0 1; }
    ReportPane #report-summary { height: auto; width: 1fr; }
    ReportPane #confusion { height: auto; max-height: 12; margin-bottom: 1; }
    ReportPane #gallery { height: 1fr; min-height: 5; }
    ReportPane #mistakes { width: 1fr; }
    ReportPane #mistake-view { width: 1fr; max-width: 48; min-width: 24; padding-left: 1; }
    ReportPane #mistake-caption { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    ReportPane #mistake-picture { height: 1fr; }
    """  # the caption above its picture, the picture in what is left: the caption is always in view

    def __init__(self) -> None:
        super().__init__(id="report-view")
        self.mistakes: list[dict[str, Any]] = []
        self.split = ""
        self.demo: dict[str, Any] | None = None  # what regenerates the report's demo images, if any

    def compose(self) -> ComposeResult:
        yield Label("no evaluation report yet: press e (or run alexnet-tui evaluate)", id="report-summary")
        yield DataTable(id="confusion", cursor_type="none")
        with Horizontal(id="gallery"):
            yield DataTable(id="mistakes", cursor_type="row")
            with Vertical(id="mistake-view"):
                yield Static("", id="mistake-caption")
                yield PictureView(id="mistake-picture")

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
        self.split = str(report.get("split", ""))
        self.demo = None
        if any(str(mistake["image"]).startswith("#") for mistake in self.mistakes):
            from alexnet_tui.data.demo import demo_settings  # only for the demo's generated images

            self.demo = demo_settings(report, path)
        table = self.query_one("#mistakes", DataTable)
        table.clear(columns=True)
        table.add_columns("conf", "predicted", "true", "image")
        for mistake in self.mistakes:
            table.add_row(
                f"{mistake['confidence']:.3f}", mistake["predicted"][:12], mistake["true"][:12],
                name_tail(Path(mistake["image"]).name),
            )  # fmt: skip
        if self.mistakes:
            self.show_mistake(0)
        else:  # an earlier report's mistake must not stay beside this one
            self.query_one("#mistake-picture", PictureView).image = None
            self.query_one("#mistake-caption", Static).update("no mistakes in this report")

    @on(DataTable.RowHighlighted, "#mistakes")
    def highlighted(self, message: DataTable.RowHighlighted) -> None:
        self.show_mistake(message.cursor_row)

    def show_mistake(self, index: int) -> None:
        mistake = self.mistakes[index]
        image = Path(mistake["image"])
        picture: Path | PILImage | None = image if image.is_file() else None
        if picture is not None:
            where = printable(f"{image.name} in {image.parent}")  # the name first: a long folder is cut, not it
        else:
            from alexnet_tui.data.demo import demo_picture

            picture = demo_picture(mistake["image"], self.split, self.demo, mistake.get("demo_index"))
            made = "generated demo image" if picture is not None else "no such file"
            where = f"{mistake['image']} in {self.split or 'the split'}: {made}"
        self.query_one("#mistake-picture", PictureView).image = picture
        caption = Text.assemble(
            "predicted ", (mistake["predicted"], "bold"), f" ({mistake['confidence']:.3f})\n",
            "true ", (mistake["true"], "bold"), "\n", (where, "dim"),
        )  # fmt: skip  # one row a line (the CSS): a long path is cut short, the picture keeps its room
        self.query_one("#mistake-caption", Static).update(caption)
