"""`alexnet-tui evaluate --html FILE`: the evaluation report as one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from alexnet_tui.data.demo import demo_picture, demo_settings

THUMBNAIL_SIDE = 160

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1f24; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.3em 0.7em; text-align: right; border: 1px solid #d0d7de; }
th:first-child, td:first-child { text-align: left; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; width: 180px; font-size: 0.85em; }
figure img { width: 160px; height: 160px; object-fit: contain; background: #f6f8fa; }
.missing { width: 160px; height: 160px; background: #f6f8fa; display: flex; align-items: center; }
"""


def thumbnail(source: str | Path | Image.Image) -> str | None:
    """The image (a file, or pixels) as a small inline JPEG (a data: URL), or None when it cannot be read."""
    try:
        if isinstance(source, Image.Image):
            small = source.convert("RGB")
        else:
            with Image.open(source) as image:
                small = image.convert("RGB")
        small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    except (OSError, ValueError, UnidentifiedImageError):
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def cell_colour(share: float, diagonal: bool) -> str:
    """Green for right answers, red for mistakes, stronger for a larger share of the row."""
    hue = "46, 160, 67" if diagonal else "207, 34, 46"
    return f"background: rgba({hue}, {0.1 + 0.8 * share:.2f})"


def mistake_picture(image: str, split: str, demo: dict[str, Any] | None, demo_index: Any = None) -> str | None:
    """A mistake's picture as a data: URL: its file, or the generated demo image its name gives."""
    if Path(image).is_file():
        return thumbnail(image)
    pixels = demo_picture(image, split, demo, demo_index)
    return thumbnail(pixels) if pixels is not None else None


def render_html(report: dict[str, Any], report_path: Path | None = None) -> str:
    """The page; `report_path` (the report's JSON file) helps find the run's settings for demo images."""
    names = report["class_names"]
    demo = demo_settings(report, report_path)
    escape = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>alexnet-tui evaluation: {escape(str(report.get('checkpoint', '')))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Evaluation report</h1>",
        f"<p>{escape(str(report.get('checkpoint', '')))} on the {escape(str(report.get('split', '')))} split of "
        f"{escape(str(report.get('data', '')))}: {report['images']} images, "
        f"loss {report['loss']:.5f}, <b>accuracy {report['accuracy']:.5f}</b></p>",
        "<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th><th>support</th></tr>",
    ]
    for name, row in report["per_class"].items():
        parts.append(
            f"<tr><td>{escape(name)}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>"
            f"<td>{row['f1']:.4f}</td><td>{row['support']}</td></tr>"
        )
    parts.append("</table><h2>Confusion matrix</h2><p>rows: true class, columns: predicted</p><table><tr><th></th>")
    parts += [f"<th>{escape(name)}</th>" for name in names]
    parts.append("</tr>")
    for index, (name, row) in enumerate(zip(names, report["confusion_matrix"], strict=True)):
        total = max(sum(row), 1)
        cells = "".join(
            f"<td style='{cell_colour(count / total, column == index)}'>{count}</td>"
            for column, count in enumerate(row)
        )
        parts.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    parts.append("</table><h2>Most confident mistakes</h2><div class='gallery'>")
    for mistake in report["most_confident_mistakes"]:
        source = mistake_picture(mistake["image"], str(report.get("split", "")), demo, mistake.get("demo_index"))
        picture = (
            f"<img src='{source}' alt='{escape(mistake['image'])}'>"
            if source
            else "<div class='missing'>no picture</div>"
        )
        parts.append(
            f"<figure>{picture}<figcaption>predicted <b>{escape(mistake['predicted'])}</b> "
            f"({mistake['confidence']:.3f}), true {escape(mistake['true'])}<br>"
            f"<small>{escape(Path(mistake['image']).name)}</small></figcaption></figure>"
        )
    parts.append("</div></body></html>")
    return "\n".join(parts)


def write_html(report: dict[str, Any], path: Path) -> Path:
    path.write_text(render_html(report), encoding="utf-8")
    return path
