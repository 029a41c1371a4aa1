"""The app's first screenful at 10,000 runs: from `python -m kdtui` starting to the runs table's
first rows, in a new process each time (nothing parsed or imported before), side by side with the
same app on a workspace of one run, and with the floor: a bare Textual app whose DataTable shows one
row. The differences are what the registry's size, and kdtui itself, cost the user.

Records are bench/registry_list.py's (a 300-epoch run's summary, spec and teachers included).
Each launch runs the app headless through Textual's Pilot at 100×30 and stops at the first rows.

    python bench/tui_first_screen.py [--runs 10000] [--repeat 7]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry_list import record  # noqa: E402

from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402

# Runs in the child: the clock starts before any import, as `kdtui` would start.
# The moment is taken in the first refresh after the rows went in (what the terminal then shows);
# a hook, not a polling loop, which would compete with the app for the interpreter.
CHILD = r"""
import time; T0 = time.perf_counter()
import os, sys
from kdtui.tui.app import KdtuiApp
from kdtui.tui.screens.runs import RunsScreen
imported = time.perf_counter() - T0
fill_rows = RunsScreen.fill_rows

def timed_fill_rows(screen, index):
    fill_rows(screen, index)
    table = screen.query_one("#runs-table")
    if table.row_count:
        screen.call_after_refresh(shown, table.row_count)

def shown(rows):
    print(f"{imported:.4f} {time.perf_counter() - T0:.4f} {rows}", flush=True)
    os._exit(0)  # measured; an orderly shutdown mid-startup only races Textual's own mount work

RunsScreen.fill_rows = timed_fill_rows
KdtuiApp(sys.argv[1]).run(headless=True, size=(100, 30))
"""


# The floor: Textual alone, the same way, a table of one row.
BARE = r"""
import time; T0 = time.perf_counter()
import os
from textual.app import App
from textual.widgets import DataTable, Footer, Header
imported = time.perf_counter() - T0

class Bare(App):
    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("id", "name")
        table.add_row("a", "b")
        self.call_after_refresh(self.shown)

    def shown(self):
        print(f"{imported:.4f} {time.perf_counter() - T0:.4f} 1", flush=True)
        os._exit(0)

Bare().run(headless=True, size=(100, 30))
"""


def launch(ws: Path | None) -> tuple[float, float]:
    code, args = (CHILD, [str(ws)]) if ws is not None else (BARE, [])
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"})
    out = done.stdout.split()
    if done.returncode != 0 or len(out) != 3:
        raise SystemExit(f"the app failed in {ws}:\n{done.stderr[-3000:]}")
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Workspace(Path(tmp) / "one"), Workspace(Path(tmp) / "many")
        RunStore(small).add_many([record(0, rng)])
        RunStore(large).add_many([record(i, rng) for i in range(args.runs)])
        samples: dict[str, list[tuple[float, float]]] = {"bare": [], "one": [], "many": []}
        for _ in range(args.repeat):  # alternating, so load on a shared machine hits each alike
            samples["bare"].append(launch(None))
            samples["one"].append(launch(small.root))
            samples["many"].append(launch(large.root))

    def med(key: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[key]) * 1000

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"median of {args.repeat} launches each, alternating")
    print(f"import textual (bare app):                 {med('bare', 0):7.0f} ms")
    print(f"import kdtui.tui.app:                      {med('one', 0):7.0f} ms")
    print(f"first row, bare Textual app (the floor):   {med('bare', 1):7.0f} ms")
    print(f"first rows, 1 run:                         {med('one', 1):7.0f} ms")
    print(f"first rows, {args.runs:,} runs (target < 500 ms): {med('many', 1):7.0f} ms")
    print(f"what the {args.runs:,} runs add:               {med('many', 1) - med('one', 1):7.0f} ms")


if __name__ == "__main__":
    main()
