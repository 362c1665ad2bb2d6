"""Run the real TUI headless (Textual's run_test) through one training run, for the speed benchmark."""

from __future__ import annotations

import asyncio
import sys

from alexnet_tui.cli import build_config, train_parser
from alexnet_tui.ui.app import AlexNetApp


async def drive(argv: list[str]) -> None:
    app = AlexNetApp(build_config(train_parser().parse_args(argv)))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        while app.state not in ("finished", "failed"):
            await asyncio.sleep(0.5)  # not pilot.pause: it waits for the screen, work a user's terminal never does
        await pilot.press("q")


if __name__ == "__main__":
    asyncio.run(drive(sys.argv[1:]))
