"""How many processes a detached sweep starts, and what each costs: the path `kdtui run --detach` takes.

1. A `--points`-point sweep (tiny digits runs) is registered and launched on one CPU slot; for
   `--watch` seconds every process whose command line names the workspace is counted and its RSS
   read from /proc. Then every run is stopped. Before issue 10 this started one process per point
   (~33 MB each, waiting); now it starts one worker per free slot, which forks one process per run
   it serves, one at a time.
2. The launch itself (enqueue + hand the runs to the line in one registry write) for `--big` points,
   with the slot held by this process, so no worker starts and only the launch is timed.

    python bench/queue_workers.py [--points 200] [--watch 20] [--big 5000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core.events import ACTIVE_STATUSES, STOPPED  # noqa: E402
from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.spec import expand_sweep, spec_from_dict  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402
from kdtui.runs.executors.slots import RunQueue, plan_slots  # noqa: E402
from kdtui.runs.service import RunService  # noqa: E402


def tiny_sweep(points: int) -> list:
    spec = spec_from_dict({"name": "bench-queue", "device": "cpu", "data": {"dataset": "digits", "teacher_subset": 200},
                           "teacher": {"epochs": 1}, "student": {"epochs": 1},
                           "sweep": {"seed": list(range(points))}}, source="bench")
    return [point.resolved() for point in expand_sweep(spec, source="bench")]


def processes_of(workspace: Path) -> dict[int, int]:
    """pid -> RSS (kB) of every process whose command line names the workspace, or that runs one
    of its runs (a forked run keeps its worker's command line)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if str(workspace).encode() in cmdline:
            rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
            found[int(entry)] = int(rss[0]) if rss else 0
    return found


def watch_sweep(points: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        store = RunStore(ws)
        service = RunService(ws, store)
        t0 = time.perf_counter()
        ids, pids = service.submit_detached(tiny_sweep(points), slots_per_gpu=1)  # register + line + workers
        launch_s = time.perf_counter() - t0
        peak, workers, runs, rss = 0, set(pids), set(), {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen = processes_of(ws.root)
            peak = max(peak, len(seen))
            for pid, kb in seen.items():
                rss.setdefault(pid, []).append(kb)
            for record in store.all():
                if record.get("worker"):
                    workers.add(record["worker"])
                    runs.add(record["id"])
            time.sleep(0.2)
        for record in store.find(status=ACTIVE_STATUSES):
            service.stop(record)
        worker_rss = [max(rss[p]) for p in pids if p in rss]
        run_rss = [max(v) for p, v in rss.items() if p not in pids]
        print(f"{points}-point sweep on 1 slot, watched {seconds:.0f} s:")
        print(f"  launch: {launch_s * 1000:.0f} ms; worker processes started: {len(pids)} "
              f"(before: {points}, one per point); workers seen in records: {len(workers)}")
        print(f"  runs taken meanwhile: {len(runs)}; most processes alive at once: {peak} "
              "(the worker + the run it forked)")
        if worker_rss:
            print(f"  worker RSS: {statistics.median(worker_rss) / 1024:.1f} MB (median of its peak)")
        if run_rss:
            print(f"  a run's process RSS: {statistics.median(run_rss) / 1024:.1f} MB (median of peaks, torch loaded)")
        print(f"  memory held by the sweep while it waits: ~{sum(worker_rss) / 1024:.0f} MB in workers "
              f"(before: ~{points * 33} MB, {points} waiting processes × ~33 MB)")
        deadline = time.monotonic() + 60
        while processes_of(ws.root) and time.monotonic() < deadline:
            time.sleep(0.2)


def time_big_launch(points: int, repeat: int) -> None:
    """Both routes into the line, every slot busy: `kdtui run --detach` (register straight into the
    line: RunService.submit_detached) and a launch of runs registered with an owner first (what a
    resume of many runs, or `--detach` before, did: every record rewritten to hand it to the line)."""
    detached, registered_then_launched = [], []
    sweep = tiny_sweep(points)
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeat):
            for route, samples in (("detached", detached), ("launch", registered_then_launched)):
                ws = Workspace(Path(tmp) / f"{route}{k}")
                service = RunService(ws)
                held = RunQueue(ws).try_slot(plan_slots([], 1)["cpu"][0])  # a busy worker, as far as a launch can tell
                t0 = time.perf_counter()
                if route == "detached":
                    ids, started = service.submit_detached(sweep, slots_per_gpu=1)
                else:
                    ids = service.submit(sweep, owner_pid=os.getpid())
                    started = service.launch(ids, slots_per_gpu=1)
                samples.append(time.perf_counter() - t0)
                assert started == [], started
                held.release()
                service.store.update_many(ids, status=STOPPED)
    print(f"{points}-point sweep registered and in the line, every slot busy (median of {repeat}):")
    print(f"  submit_detached (kdtui run --detach):      {statistics.median(detached):.2f} s")
    print(f"  submit with an owner, then launch:         {statistics.median(registered_then_launched):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--watch", type=float, default=20.0)
    parser.add_argument("--big", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    watch_sweep(args.points, args.watch)
    time_big_launch(args.big, args.repeat)


if __name__ == "__main__":
    main()
