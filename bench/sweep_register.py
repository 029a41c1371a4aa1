"""How long registering a 5,000-point sweep takes, before any training: the path `kdtui run` takes.

Three steps, timed apart: `expand_sweep` (validate every point), `resolved()` on each point (the
data set's defaults filled in), then `RunService.submit` (claim a folder per point, write its
spec.toml, and enter the sweep in the registry in one locked write, each run's record.json
included). Submit is timed into an empty workspace and into one that already holds the sweep (the
registry then has to be read and checked for taken ids). Prints medians; target: submit < 5 s.

    python bench/sweep_register.py [--points 5000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core.spec import expand_sweep, spec_from_dict  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402
from kdtui.runs.service import RunService  # noqa: E402

TARGET_S = 5.0
TEMPERATURES = [1.0, 2.0, 4.0, 8.0, 16.0]


def sweep(points: int) -> dict:
    seeds = max(points // len(TEMPERATURES), 1)
    return {"name": "bench-sweep", "data": {"dataset": "digits"},
            "sweep": {"seed": list(range(seeds)), "distill.temperature": TEMPERATURES}}


def timed(fn, repeat: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    spec = spec_from_dict(sweep(args.points), source="bench")
    t_expand, expanded = timed(lambda: expand_sweep(spec, source="bench"), args.repeat)
    t_resolve, points = timed(lambda: [point.resolved() for point in expanded], args.repeat)

    empty, into_full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeat):
            root = Path(tmp) / f"ws{k}"
            service = RunService(Workspace(root))
            t0 = time.perf_counter()
            ids = service.submit(points)
            empty.append(time.perf_counter() - t0)
            assert len(ids) == len(points) and len(service.store) == len(points)
            t0 = time.perf_counter()
            service.submit(points)
            into_full.append(time.perf_counter() - t0)
            shutil.rmtree(root)

    t_submit = statistics.median(empty)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"{len(points):,} points; median of {args.repeat}")
    print(f"expand_sweep (validate every point): {t_expand:7.2f} s")
    print(f"resolved() on every point:           {t_resolve:7.2f} s")
    print(f"submit into an empty workspace:      {t_submit:7.2f} s  ({t_submit / len(points) * 1e3:.2f} ms a point; "
          f"target < {TARGET_S:.0f} s: {'met' if t_submit < TARGET_S else 'MISSED'})")
    print(f"submit beside {len(points):,} registered runs:  {statistics.median(into_full):7.2f} s")
    print(f"the whole path (expand + resolve + submit): {t_expand + t_resolve + t_submit:7.2f} s")


if __name__ == "__main__":
    main()
