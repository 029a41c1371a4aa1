"""The app's first screenful at 10,000 runs: from `python -m kdtui` starting to the runs table's
first rows, in a new process each time (nothing parsed or imported before), side by side with the
same app on a workspace of one run. The difference is what the registry's size costs the user.

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
CHILD = r"""
import time; T0 = time.perf_counter()
import asyncio, os, sys
from kdtui.tui.app import KdtuiApp
imported = time.perf_counter() - T0

async def main():
    app = KdtuiApp(sys.argv[1])
    async with app.run_test(size=(100, 30)):
        while True:
            tables = app.screen.query("#runs-table")
            if tables and tables.first().row_count > 0:
                break
            await asyncio.sleep(0.002)
        print(f"{imported:.4f} {time.perf_counter() - T0:.4f} {tables.first().row_count}", flush=True)
        os._exit(0)  # measured; an orderly shutdown mid-startup only races Textual's own mount work

asyncio.run(main())
"""


def launch(ws: Path) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(ws)], capture_output=True, text=True,
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
        RunStore(small, auto_reconcile=False).add_many([record(0, rng)])
        RunStore(large, auto_reconcile=False).add_many([record(i, rng) for i in range(args.runs)])
        samples: dict[str, list[tuple[float, float]]] = {"one": [], "many": []}
        for _ in range(args.repeat):  # alternating, so load on a shared machine hits both alike
            samples["one"].append(launch(small.root))
            samples["many"].append(launch(large.root))

    def med(key: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[key]) * 1000

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"median of {args.repeat} launches each, alternating")
    print(f"import kdtui.tui.app:                      {med('one', 0):7.0f} ms")
    print(f"first rows, 1 run:                         {med('one', 1):7.0f} ms")
    print(f"first rows, {args.runs:,} runs (target < 500 ms): {med('many', 1):7.0f} ms")
    print(f"what the {args.runs:,} runs add:               {med('many', 1) - med('one', 1):7.0f} ms")


if __name__ == "__main__":
    main()
