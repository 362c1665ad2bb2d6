"""Keys as a person presses them: fields that take the letters, feedback at once, a second run set up
in the form, the words on the header, footer, palette and help."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from alexnet_tui.config import TrainConfig
from alexnet_tui.ui.app import AlexNetApp
from alexnet_tui.ui.model_summary import narrow_summary
from alexnet_tui.ui.screens import DownloadOffer, HelpScreen
from tests.conftest import tiny_config
from tests.fake_trainer import ScriptedTrainer
from tests.test_ui import PacedTrainer, rows, wait_for


@pytest.fixture
def paced_trainer():
    return PacedTrainer


def status(app: AlexNetApp) -> str:
    return str(app.query_one("#status", Static).render())


def footer_keys(app: AlexNetApp) -> dict[str, bool]:
    """The footer's keys by their words, and whether each works now (a greyed key does nothing)."""
    from textual.widgets._footer import FooterKey

    return {key.description: not key.has_class("-disabled") for key in app.query(FooterKey).results(FooterKey)}


@pytest.mark.asyncio
async def test_a_path_typed_on_the_predict_tab_goes_into_its_field_and_starts_nothing(tmp_path):
    app = AlexNetApp(tiny_config(tmp_path), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        field = app.query_one("#predict-path", Input)
        await wait_for(pilot, lambda: app.focused is field)
        await pilot.press(*"x3s/a.jpg")
        await pilot.pause()
        assert field.value == "x3s/a.jpg"
        assert app.state == "idle" and app.trainer is None  # neither s nor x nor 3 acted
        await wait_for(pilot, lambda: footer_keys(app).get("Leave field") is True)  # the way out is on the footer
        await pilot.press("escape", "1")
        await wait_for(pilot, lambda: app.query_one("TabbedContent").active == "train")
        await wait_for(pilot, lambda: app.focused is None and "Leave field" not in footer_keys(app))


@pytest.mark.asyncio
async def test_a_run_folder_typed_on_the_charts_tab_opens_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # Cats vs Dogs is not downloaded
    app = AlexNetApp(TrainConfig(), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        field = app.query_one("#compare-run", Input)
        await wait_for(pilot, lambda: app.focused is field)
        await pilot.press(*"runs/dogs-and-cats")
        await pilot.pause()
        assert field.value == "runs/dogs-and-cats"
        assert not isinstance(app.screen, DownloadOffer) and app.trainer is None


@pytest.mark.asyncio
async def test_keys_say_at_once_what_they_asked_until_the_run_gets_there(tmp_path, paced_trainer):
    app = AlexNetApp(tiny_config(tmp_path, epochs=2), trainer_factory=paced_trainer)
    shown: list[str] = []  # every header the screen showed, in order
    update_status = app.run_screen.update_status

    def recorded() -> None:
        update_status()
        if not shown or shown[-1] != status(app):
            shown.append(status(app))

    app.run_screen.update_status = recorded

    def said_before(asked: str, reached: str) -> bool:
        words = [line.split(" |")[0] for line in shown]
        return asked in words and reached in words[words.index(asked) :]

    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: rows(app) >= 1)
        await pilot.press("p")
        await wait_for(pilot, lambda: said_before("PAUSING", "PAUSED"))
        await pilot.press("p")
        await wait_for(pilot, lambda: said_before("RESUMING", "TRAINING"))
        await pilot.press("e")
        await wait_for(pilot, lambda: said_before("TRAINING · evaluation requested", "TRAINING"))
        await pilot.press("x")
        await wait_for(pilot, lambda: said_before("STOPPING", "STOPPED"))
        await pilot.press("q")
    assert app.farewell() == (
        f"run {tmp_path / 'run'} stopped and saved: go on with alexnet-tui --resume {tmp_path / 'run'} "
        f"(headless: alexnet-tui --no-ui --resume {tmp_path / 'run'})"
    )


@pytest.mark.asyncio
async def test_after_a_finish_s_shows_the_settings_and_the_next_run_starts_on_clean_tables(tmp_path):
    app = AlexNetApp(tiny_config(tmp_path, epochs=1), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.state == "finished")
        first_rows = rows(app)
        assert first_rows > 0 and rows(app, "#epochs") > 0
        await pilot.press("s")
        await pilot.pause()
        assert app.query_one("#setup").display and not app.query_one("#live").display
        assert app.state == "finished"  # nothing started yet: the form is for the next run
        epochs = app.query_one("#field-epochs", Input)
        epochs.focus()
        epochs.value = "2"
        await pilot.press("escape", "s")
        await wait_for(pilot, lambda: app.state == "finished" and app.config.epochs == 2 and rows(app) > 0)
        assert rows(app, "#epochs") == 3  # two epochs and the test report: none of the first run's rows
        await pilot.press("q")


@pytest.mark.asyncio
async def test_the_attached_footer_leaves_rather_than_quits_and_offers_no_start(finished_run):
    app = AlexNetApp(TrainConfig(), attach=finished_run, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: rows(app, "#epochs") > 0)
        await wait_for(pilot, lambda: "Leave" in footer_keys(app))  # the footer recomposes after the bindings change
        keys = footer_keys(app)
        assert "Leave" in keys and "Quit" not in keys and "Start" not in keys
        assert "e" not in str(app.query_one("#report-summary").render()).split()  # no "press e" where e is dead
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen) and "read-only" in app.screen.text
        await pilot.press("escape", "q")
    assert app.farewell() is not None and str(finished_run) in app.farewell()


@pytest.mark.asyncio
async def test_the_palette_lists_each_command_once(tmp_path):
    app = AlexNetApp(tiny_config(tmp_path), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(100, 30)):
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert titles.count("Quit") == 1 and "Keys" not in titles and "Help" in titles
        assert "Leave" not in titles and "Leave field" not in titles


def test_the_summary_beside_the_form_keeps_its_param_column():
    from alexnet_tui.model import build_model, summary_text

    text = summary_text(build_model("tutorial", 2, 227, 1.0))
    narrow = narrow_summary(text)
    assert max(len(line) for line in narrow.splitlines()) <= 57  # 100 columns less the form and the border
    assert "37,752,832" in narrow and "Total params: 58,289,538" in narrow


@pytest.mark.asyncio
async def test_with_no_mouse_the_keys_reach_what_is_below_the_charts_and_the_summary(tmp_path):
    """At 80x24 the machine panel is below the charts and the summary longer than the screen: the
    arrow and page keys scroll them (nothing had focus, so nothing scrolled)."""
    from textual.containers import ScrollableContainer

    app = AlexNetApp(tiny_config(tmp_path), trainer_factory=ScriptedTrainer)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "escape", "end")  # esc leaves the compare field for the charts
        charts = app.query_one("#charts-scroll", ScrollableContainer)
        await wait_for(pilot, lambda: charts.max_scroll_y > 0 and charts.scroll_y == charts.max_scroll_y)
        assert app.focused is charts and footer_keys(app).get("Start") is True  # s still starts a run
        await pilot.press("2", "pagedown")
        model = app.query_one("#model-scroll", ScrollableContainer)
        await wait_for(pilot, lambda: model.scroll_y > 0)
        await pilot.press("q")


@pytest.mark.asyncio
async def test_watching_a_finished_run_offers_no_stop_and_x_leaves_no_file(finished_run):
    app = AlexNetApp(TrainConfig(), attach=finished_run, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: rows(app, "#epochs") > 0 and app.state == "finished")
        await wait_for(pilot, lambda: footer_keys(app).get("Stop") is False)  # greyed: nothing to stop
        await pilot.press("x")
        await pilot.pause()
        assert not (finished_run / "STOP").exists() and not app._notifications
        await pilot.press("q")
