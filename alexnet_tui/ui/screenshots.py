"""Make screenshots/*.svg from the real app and the real engine on the built-in demo data:
`python -m alexnet_tui.ui.screenshots` (takes a few minutes on a CPU)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from textual.css.query import NoMatches

from alexnet_tui.config import TrainConfig
from alexnet_tui.ui.app import AlexNetApp


async def wait_for(pilot, condition, timeout: float = 600) -> None:
    """Until `condition()` holds (a widget not composed yet does not hold), by a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except NoMatches:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not reach the expected state")
        await pilot.pause(0.05)


async def take(folder: Path) -> None:
    folder = folder.resolve()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)  # the run lands in ./runs/demo, as a user's would
        config = TrainConfig(data="demo", image_size=96, epochs=3, demo_size=300, out="runs/demo")
        app = AlexNetApp(config)
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await wait_for(pilot, lambda: "Conv2d-1" in str(app.query_one(".summary").render()))
            app.save_screenshot("idle.svg", str(folder))
            await pilot.press("s")
            await wait_for(pilot, lambda: app.query_one("#batches").row_count >= 6)
            await pilot.pause(0.3)
            app.save_screenshot("training.svg", str(folder))
            await wait_for(pilot, lambda: any("Saving Model!" in n.message for n in app._notifications))
            await pilot.pause(0.5)
            app.save_screenshot("best-checkpoint.svg", str(folder))
            await wait_for(pilot, lambda: app.state == "finished")
            await pilot.pause(0.5)
            app.save_screenshot("finished.svg", str(folder))
            write_demo_folder(Path("pictures"), 6)  # a picture file to ask the Predict tab about
            picture = sorted(Path("pictures").rglob("*.jpg"))[0]
            await pilot.press("4", *str(picture), "enter")
            results = app.query_one("#predict-results")
            await wait_for(pilot, lambda: len(results.lines) > 0)
            app.clear_notifications()  # the tab as it is once the run's toasts have gone
            await pilot.pause(1.0)
            app.save_screenshot("predict.svg", str(folder))
            await pilot.press("escape", "q")


def write_demo_folder(root: Path, count: int) -> None:
    """The demo images as JPEG files in one folder per class, as a user's data would be."""
    from PIL import Image

    from alexnet_tui.data.demo import DEMO_CLASSES, demo_image

    for name in DEMO_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels, label = demo_image(index, 160, seed=7)
        Image.fromarray(pixels).save(root / DEMO_CLASSES[label] / f"{index}.jpg", quality=90)


async def take_attached(folder: Path) -> None:
    """A run training in the background, as another process's would, and a screen attached to it,
    paused from that screen."""
    import threading

    from alexnet_tui.engine import RunState, Trainer
    from alexnet_tui.metrics import MetricsWriter

    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        write_demo_folder(Path("pictures"), 300)  # files, so the mistakes gallery has pictures to show
        config = TrainConfig(data="pictures", image_size=96, epochs=20, out="runs/pictures", workers=1)
        trainer = Trainer(config)
        trainer.prepare()
        metrics = MetricsWriter(trainer.position().run_dir / "metrics.jsonl")
        trainer.subscribe(metrics)
        thread = threading.Thread(target=trainer.fit)
        thread.start()
        try:
            app = AlexNetApp(TrainConfig(), attach=Path("runs/pictures"))
            async with app.run_test(size=(100, 30), notifications=True) as pilot:
                await wait_for(pilot, lambda: app.query_one("#epochs").row_count >= 1)
                await pilot.press("p")
                await wait_for(pilot, lambda: app.state == RunState.PAUSED)
                await pilot.pause(0.5)
                app.clear_notifications()  # the screen, not the toasts of the run's first epoch
                await pilot.pause(0.3)
                app.save_screenshot("attached.svg", str(folder))
                await pilot.press("e")
                await wait_for(pilot, lambda: app.query_one("#confusion").row_count == 3)
                await pilot.press("5")
                app.clear_notifications()
                await pilot.pause(1.0)
                app.save_screenshot("report.svg", str(folder))
                await pilot.press("q")
        finally:
            trainer.control.request_stop("screenshots taken")
            thread.join()
            trainer.close()
            metrics.close()


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(take(folder))
    asyncio.run(take_attached(folder))
    print(f"screenshots written to {folder}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
