"""How long `kdtui runs stop --all -y` takes on a 5,000-point queued sweep (and `--group G`).

Registers the sweep through the project's own API (`RunService.submit`: queued runs, owned by this
process so nothing reconciles them away), then times the real command as a subprocess. Every queued
run leaves the queue in one registry write. Prints the times; target: < 5 s each.

    python bench/stop_many.py [--points 5000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core.events import STOPPED  # noqa: E402
from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.spec import expand_sweep, spec_from_dict  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402
from kdtui.runs.service import RunService  # noqa: E402

TARGET_S = 5.0
KDTUI = [str(Path(sys.executable).with_name("kdtui"))] if Path(sys.executable).with_name("kdtui").exists() \
    else [sys.executable, "-m", "kdtui.cli"]


def register(root: Path, points: int) -> list[str]:
    spec = spec_from_dict({"name": "bench-stop", "data": {"dataset": "digits"},
                           "sweep": {"seed": list(range(points))}}, source="bench")
    resolved = [point.resolved() for point in expand_sweep(spec, source="bench")]
    return RunService(Workspace(root, create=True)).submit(resolved, owner_pid=os.getpid())


def timed_stop(root: Path, *selector: str) -> float:
    t0 = time.perf_counter()
    result = subprocess.run([*KDTUI, "runs", "stop", *selector, "-y", "-w", str(root)], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"runs stop failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for how in ("--all", "--group"):
            root = Path(tmp) / how.strip("-")
            t0 = time.perf_counter()
            ids = register(root, args.points)
            registered = time.perf_counter() - t0
            # The sweep varies only the seed, so all its points are one seed group.
            selector = (how,) if how == "--all" else (how, RunStore(root).get(ids[0])["group_hash"][:8])
            elapsed = timed_stop(root, *selector)
            stopped = sum(r["status"] == STOPPED for r in RunStore(root).all())
            print(f"runs stop {' '.join(selector)}: {len(ids)} queued runs (registered in {registered:.1f} s), "
                  f"{stopped} stopped in {elapsed:.2f} s (target < {TARGET_S:.0f} s)")


if __name__ == "__main__":
    main()
