"""How long the spec editor takes to open, and "Edit copy" to show a run's spec in its form.

The app runs headless (Pilot) at 100×30 on a workspace with one finished-looking run (its spec.toml
written the way a run writes it). Each round: press `l` (or `e`), then wait until the editor's form
shows the spec (a field holds the source's value) and the validation line says "valid"; the time is
from the key press. Medians of --rounds rounds; the issue's target is under 0.5 s for both.

    python bench/tui_editor.py [--rounds 7]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.spec import spec_from_dict  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402
from kdtui.runs.service import new_record  # noqa: E402
from kdtui.tui.app import KdtuiApp  # noqa: E402
from kdtui.tui.screens.editor import EditorScreen, widget_id  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402


def make_workspace(root: Path) -> str:
    ws = Workspace(root)
    spec = spec_from_dict({"name": "bench-copy", "seed": 7, "data": {"dataset": "digits"}}).resolved()
    run_id = "251101-090000-beef"
    ws.create_run_dir(run_id)
    (ws.run_dir(run_id) / "spec.toml").write_text(spec.to_toml())
    RunStore(ws).add({**new_record(run_id, spec, status="done"), "created": time.time()})
    return run_id


async def until(pilot, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the editor never showed its spec")
        await pilot.pause(0.005)


async def measure(root: Path, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"open (l)": [], "edit copy (e)": []}
    app = KdtuiApp(str(root), registry_poll=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.loaded and isinstance(app.screen, RunsScreen) and app.screen.complete)
        for _ in range(rounds):
            for key, label, wanted in (("l", "open (l)", "0"), ("e", "edit copy (e)", "7")):
                start = time.perf_counter()
                await pilot.press(key)

                def shown() -> bool:
                    screen = app.screen
                    if not isinstance(screen, EditorScreen):
                        return False
                    try:
                        seed = screen.query_one(f"#{widget_id('seed')}").value
                    except Exception:
                        return False
                    return seed == wanted and "valid" in screen.status_text
                await until(pilot, shown)
                times[label].append(time.perf_counter() - start)
                app.pop_screen()
                await until(pilot, lambda: isinstance(app.screen, RunsScreen))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        make_workspace(root)
        times = asyncio.run(measure(root, args.rounds))
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:>14}: median {median * 1000:6.0f} ms  (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f},"
              f" {len(values)} rounds)  target 500 ms: {median / 0.5:.2f}x of it")


if __name__ == "__main__":
    main()
