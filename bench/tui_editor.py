"""How long the spec editor takes to open (`l`), and "Edit copy" (`e`) to show a run's spec in its form.

The app runs headless (Pilot) at 100×30 on a workspace with one finished-looking run (its spec.toml
written the way a run writes it). Each app session is a fresh Python process, so the first open
pays for what a user's first open pays for (imports, building the form); the first key of a session
alternates between `l` and `e`. A session waits --think seconds after the runs screen is complete
(a person reading it) before the first key, and between rounds.

Two times per open, both from the key press:
  shown    the first frame drawn with the spec in the form (its name and seed fields) and the
           validation line saying "valid": what the user waits to see.
  settled  the last frame of the open: no new frame for QUIET_S after it (the start-from list filled,
           the footer's keys redrawn); from then on the screen is still and keys go straight through.
Medians over the rounds; the issue's target is under 0.5 s for both keys.

    python bench/tui_editor.py [--sessions 4] [--rounds 5] [--think 1.0]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE = (100, 30)
QUIET_S = 0.25                        # no frame for this long: the open has settled
EXPECTED = {"l": ("digits-selfdistill", "0"), "e": ("bench-copy", "7")}   # (name, seed) shown
LABELS = {"l": "open (l)", "e": "edit copy (e)"}


def make_workspace(root: Path) -> str:
    from kdtui.core.registry import RunStore
    from kdtui.core.spec import spec_from_dict
    from kdtui.core.workspace import Workspace
    from kdtui.core.lifecycle import new_record

    ws = Workspace(root)
    spec = spec_from_dict({"name": "bench-copy", "seed": 7, "data": {"dataset": "digits"}}).resolved()
    run_id = "251101-090000-beef"
    ws.create_run_dir(run_id)
    (ws.run_dir(run_id) / "spec.toml").write_text(spec.to_toml())
    RunStore(ws).add({**new_record(run_id, spec), "status": "done", "created": time.time()})
    return run_id


# -- one app session (a child process) --------------------------------------------------------------

class FrameClock:
    """Times the frames the app draws. Textual hands every frame to `App._display` (headless, it
    composes the frame and skips the terminal write), so wrapping it sees each frame as drawn."""

    def __init__(self, app) -> None:
        self.app = app
        self.last_frame = 0.0
        self.shown_at: float | None = None
        self.wanted: tuple[str, str] | None = None
        draw = app._display

        def display(screen, renderable) -> None:
            draw(screen, renderable)
            if renderable is None:
                return
            now = time.perf_counter()
            self.last_frame = now
            if self.shown_at is None and self.wanted is not None and self._shows_spec(screen):
                self.shown_at = now
        app._display = display

    def _shows_spec(self, screen) -> bool:
        from kdtui.tui.screens.editor import EditorScreen, widget_id

        if not isinstance(screen, EditorScreen):
            return False
        try:
            name = screen.query_one(f"#{widget_id('name')}").value
            seed = screen.query_one(f"#{widget_id('seed')}").value
            return (name, seed) == self.wanted and "valid" in screen.status_text
        except Exception:  # not composed yet
            return False

    async def open(self, pilot, key: str, timeout: float = 30.0) -> tuple[float, float]:
        """Press `key`; (shown, settled) in seconds from the press."""
        self.wanted, self.shown_at = EXPECTED[key], None
        start = time.perf_counter()
        await pilot.press(key)
        while self.shown_at is None or time.perf_counter() - self.last_frame < QUIET_S:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{key}: the editor never showed its spec")
            await asyncio.sleep(0.01)
        self.wanted = None
        return self.shown_at - start, self.last_frame - start


async def session(root: Path, keys: list[str], think: float) -> list[dict]:
    from kdtui.tui.app import KdtuiApp
    from kdtui.tui.screens.runs import RunsScreen

    app = KdtuiApp(str(root), registry_poll=0.3)
    samples = []
    async with app.run_test(size=SIZE) as pilot:
        clock = FrameClock(app)
        deadline = time.monotonic() + 30
        while not (app.loaded and isinstance(app.screen, RunsScreen) and app.screen.complete):
            if time.monotonic() > deadline:
                raise TimeoutError("the runs screen never loaded")
            await asyncio.sleep(0.01)
        for i, key in enumerate(keys):
            await pilot.pause(think)
            shown, settled = await clock.open(pilot, key)
            samples.append({"key": key, "first": i == 0, "shown": shown, "settled": settled})
            app.pop_screen()
            while not isinstance(app.screen, RunsScreen):
                await asyncio.sleep(0.01)
    return samples


# -- the report ---------------------------------------------------------------------------------------

def _row(label: str, samples: list[dict]) -> str:
    if not samples:
        return f"{label:>22}: no samples"
    parts = []
    for what in ("shown", "settled"):
        values = [s[what] * 1000 for s in samples]
        parts.append(f"{what} {statistics.median(values):5.0f} ms ({min(values):.0f}–{max(values):.0f})")
    worst = max(statistics.median([s["shown"] for s in samples]), statistics.median([s["settled"] for s in samples]))
    return f"{label:>22}: " + "   ".join(parts) + f"   n={len(samples)}   target 500 ms: {worst / 0.5:.2f}x of it"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="fresh app processes (first key alternates l, e)")
    parser.add_argument("--rounds", type=int, default=5, help="opens of each key per session")
    parser.add_argument("--think", type=float, default=1.0, help="seconds before each key press")
    parser.add_argument("--session", nargs=2, metavar=("ROOT", "KEYS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session:
        root, keys = args.session
        print(json.dumps(asyncio.run(session(Path(root), list(keys), args.think))))
        return
    samples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        make_workspace(root)
        for i in range(args.sessions):
            keys = ("le" if i % 2 == 0 else "el") * args.rounds
            out = subprocess.run([sys.executable, __file__, "--session", str(root), keys, "--think", str(args.think)],
                                 check=True, capture_output=True, text=True)
            samples += json.loads(out.stdout.strip().splitlines()[-1])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {args.sessions} sessions × {args.rounds}"
          f" rounds, think {args.think} s")
    for key in "le":
        print(_row(f"first {LABELS[key]}", [s for s in samples if s["key"] == key and s["first"]]))
        print(_row(LABELS[key] + " again", [s for s in samples if s["key"] == key and not s["first"]]))


if __name__ == "__main__":
    main()
