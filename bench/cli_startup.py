"""How long the shell commands take to answer, as a user sees it (a fresh process each time).

Builds a workspace whose registry holds 1,000 finished runs shaped like real records (the records of
bench/registry_list.py), then times as subprocesses, median of 5 each:

    kdtui --help
    kdtui runs list --workspace W
    kdtui runs list --workspace W --json
    kdtui runs show ID --workspace W --json

and prints each against its target (0.3 s for `--help`, issue 10; 0.5 s for the others), with the bare
interpreter's start-up for scale. With --importtime it also prints the slowest imports of `kdtui runs
list` (python -X importtime).

    python bench/cli_startup.py [--runs 1000] [--repeat 5] [--importtime]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from registry_list import record  # noqa: E402  (the same record shape as the registry benchmark)

from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402

HELP_TARGET_S = 0.3
TARGET_S = 0.5


def kdtui_command() -> list[str]:
    script = Path(sys.executable).with_name("kdtui")
    if script.exists():
        return [str(script)]
    found = shutil.which("kdtui")
    return [found] if found else [sys.executable, "-m", "kdtui.cli"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], repeat: int, env: dict) -> tuple[float, float, int]:
    """Median wall seconds, median CPU seconds (user + system: what a busy machine inflates
    least), stdout bytes."""
    walls, cpus, size = [], [], 0
    for _ in range(repeat):
        cpu0, t0 = children_cpu(), time.perf_counter()
        result = subprocess.run(command, capture_output=True, env=env)
        walls.append(time.perf_counter() - t0)
        cpus.append(children_cpu() - cpu0)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.decode()[-500:]}")
        size = len(result.stdout)
    return statistics.median(walls), statistics.median(cpus), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--importtime", action="store_true", help="show the slowest imports of `runs list`")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "KDTUI_HOME"}
    env.update(COLUMNS="120", NO_COLOR="1")
    kdtui = kdtui_command()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        docs = [record(i, rng) for i in range(args.runs)]
        RunStore(ws).add_many(docs)
        size_mb = sum(f.stat().st_size for f in (ws.root / "kdtui.index").glob("*.json")) / 1e6
        middle = docs[args.runs // 2]["id"]

        cases = [
            ("python -c pass (interpreter alone)", [sys.executable, "-c", "pass"], None),
            ("kdtui --help", [*kdtui, "--help"], HELP_TARGET_S),
            ("kdtui runs list", [*kdtui, "runs", "list", "--workspace", str(ws.root)], TARGET_S),
            ("kdtui runs list --json", [*kdtui, "runs", "list", "--workspace", str(ws.root), "--json"], TARGET_S),
            ("kdtui runs show ID --json", [*kdtui, "runs", "show", middle, "--workspace", str(ws.root), "--json"],
             TARGET_S),
        ]
        print(f"registry: {args.runs} runs, {size_mb:.1f} MB; median of {args.repeat}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times grow with it; CPU less)")
        print(f"{'command':38s} {'wall s':>7s} {'cpu s':>7s} {'target s':>9s} {'wall/target':>12s} {'stdout':>10s}")
        for label, command, target in cases:
            subprocess.run(command, capture_output=True, env=env)  # warm the page cache
            wall, cpu, out_bytes = timed(command, args.repeat, env)
            if target is None:
                print(f"{label:38s} {wall:7.3f} {cpu:7.3f}")
                continue
            verdict = "ok" if wall <= target else "OVER"
            print(f"{label:38s} {wall:7.3f} {cpu:7.3f} {target:9.2f} {wall / target:12.2f} {out_bytes:10d}  {verdict}")

        if args.importtime:
            result = subprocess.run([sys.executable, "-X", "importtime", "-m", "kdtui.cli", "runs", "list",
                                     "--workspace", str(ws.root)], capture_output=True, text=True, env=env)
            rows = []
            for line in result.stderr.splitlines():
                if not line.startswith("import time:") or line.count("|") != 2:
                    continue
                head, cumulative_us, name = line.split("|")
                try:
                    rows.append((int(cumulative_us), int(head.split(":")[1]), name.rstrip()))
                except ValueError:
                    continue  # the header line
            print("\nslowest imports of `kdtui runs list` (cumulative ms, self ms; indent = depth):")
            for cumulative, own, name in sorted(rows, reverse=True)[:25]:
                print(f"  {cumulative / 1000:8.1f} {own / 1000:8.1f}  {name}")


if __name__ == "__main__":
    main()
