"""The live tables: one row per batch (the newest few hundred) and one per epoch, best marked."""

from __future__ import annotations

from textual.widgets import DataTable

from alexnet_tui.engine import events as ev

MAX_BATCH_ROWS = 200  # older rows leave the table; every batch stays in metrics.jsonl


class BatchTable(DataTable):
    def __init__(self) -> None:
        super().__init__(id="batches", cursor_type="none", zebra_stripes=True)

    # Fixed widths: the columns never jump as rows of other widths arrive (and screenshots are stable).
    COLUMNS = (("epoch", 9), ("batch", 9), ("loss", 7), ("acc", 7), ("run loss", 8), ("run acc", 7), ("img/s", 6),
               ("lr", 8))  # fmt: skip

    def on_mount(self) -> None:
        for label, width in self.COLUMNS:
            self.add_column(label, width=width)

    def add_batches(self, rows: list[ev.BatchEnd]) -> None:
        """Many rows in one go: the drain hands over everything since the last screen update."""
        for row in rows[-MAX_BATCH_ROWS:]:
            self.add_row(
                f"{row.epoch}/{row.epochs}",
                f"{row.batch}/{row.batches}",
                f"{row.loss:.5f}",
                f"{row.acc:.5f}",
                f"{row.running_loss:.5f}",
                f"{row.running_acc:.5f}",
                f"{row.images_per_sec:.1f}",
                f"{row.lr:.2e}" if row.lr is not None else "-",
            )
        while self.row_count > MAX_BATCH_ROWS:
            self.remove_row(next(iter(self.rows)))
        # After the refresh: the new rows must be in the virtual size before scrolling to them.
        self.call_after_refresh(self.scroll_end, animate=False)


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
            f"{event.images_per_sec:.1f}",
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
