"""The hyperparameter form shown before the first start."""

from __future__ import annotations

from dataclasses import fields

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label

from alexnet_tui.config import TrainConfig, default_image_size, field_type
from alexnet_tui.errors import UsageError

# The fields config.py gives a form label: (name, label, type).
FIELDS = [
    (item.name, item.metadata["form"], field_type(item.name)) for item in fields(TrainConfig) if item.metadata["form"]
]


HINT = "tab: edit fields  enter: start\nesc: leave field  s: start"


class SettingsForm(Vertical):
    """Edits a copy of the config; read_config() validates it with the same rules as the CLI."""

    DEFAULT_CSS = """
    SettingsForm { width: 38; height: auto; padding: 0 1; }
    SettingsForm Label { margin-top: 0; color: $text-muted; }
    SettingsForm Input { height: 1; border: none; padding: 0 1; background: $boost; }
    SettingsForm Input:focus { background: $accent 30%; }
    SettingsForm #settings-hint { margin-top: 1; color: $text; }
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(id="settings")
        self.config = config

    def compose(self) -> ComposeResult:
        for name, label, _ in FIELDS:
            yield Label(label)
            yield Input(str(getattr(self.config, name)), id=f"field-{name}", compact=True)
        yield Label(HINT, id="settings-hint")

    def show_hint(self, text: str) -> None:
        """A line above the keys' hint: what the form is for now (a new run after a finish)."""
        self.query_one("#settings-hint", Label).update(f"{text}\n{HINT}")

    def use_demo(self) -> None:
        """The demo set, at its own image size unless the field was changed from the default."""
        self.query_one("#field-data", Input).value = "demo"
        size = self.query_one("#field-image_size", Input)
        if size.value.strip() == str(default_image_size(self.config.data, self.config.arch)):
            size.value = str(default_image_size("demo", self.config.arch))

    def read_config(self, base: TrainConfig) -> TrainConfig:
        values = base.to_dict()
        for name, label, kind in FIELDS:
            text = self.query_one(f"#field-{name}", Input).value.strip()
            try:
                values[name] = kind(text)
            except ValueError:
                raise UsageError(f"{label}: {text!r} is not a valid {kind.__name__}") from None
        return TrainConfig.from_dict(values).validate()
