"""metrics.jsonl: the engine's event stream on disk, one JSON object per line with an `event` field."""

from __future__ import annotations

import json
from pathlib import Path

from alexnet_tui.engine.events import Event


class MetricsWriter:
    """A subscriber that appends each event as one line. A line is written whole or not at all
    from a reader's point of view: readers skip a last line without its newline."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # line-buffered

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict]:
    """Every whole line of a metrics file (a torn last line from a crash is ignored)."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                break
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records
