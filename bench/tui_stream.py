"""How quickly the app shows what running runs write, what it costs in memory, and how long the
runs screen takes to open on a big workspace.

1. Latency: 16 fake running runs (registry records with this process's pid) each get ~20 events/s
   from a writer thread (progress events, an epoch event about once a second). The app runs headless
   (Pilot) for ~20 s: 15 s on the runs screen, 5 s on one run's live screen. For each epoch event:
   applied = when the batch holding it was folded into the app's state, drawn = when the screen's
   next (throttled) redraw ran; both minus the event's "t".
2. Memory: the same 16 runs, written as fast as the app reads: tracemalloc's current size (and RSS)
   once the app has read 1,000 events per run, then 10,000 per run (live screen of one run open).
3. Opening the runs screen on a workspace of 1,000 finished runs: app start to a full table.

    python bench/tui_stream.py [--seconds 20] [--runs 16] [--rate 20]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core.events import EpochMetrics  # noqa: E402
from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.tui.app import KdtuiApp  # noqa: E402
from kdtui.tui.screens.live import LiveScreen  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402

HOST = socket.gethostname()
STEPS = 100


def write_registry(ws: Workspace, records: list[dict]) -> None:
    RunStore(ws).add_many(records)


def fake_spec(seed: int, epochs: int = 300) -> dict:
    train = {"model": "resnet56", "norm": "batch", "epochs": epochs, "batch_size": 128, "lr": 0.05,
             "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "schedule": "cosine",
             "final_lr": 1e-6}
    return {"name": f"bench-{seed}", "seed": seed, "device": "cuda",
            "data": {"dataset": "cifar100", "root": "~/.cache/kdtui/data", "download": True, "image_size": 0,
                     "teacher_subset": 0, "split": 0.0, "teacher_split": 0, "student_splits": [0], "extra": []},
            "teacher": {**train, "members": 3, "augment": ["crop", "hflip"]},
            "student": {**train, "init": "random", "init_lambda": 0.0},
            "distill": {"loss": "kl", "temperature": 4.0, "alpha": 0.0, "augment": ["crop", "hflip"],
                        "mixup_alpha": 1.0},
            "eval": {"every": 1}}


def running_record(run_id: str, i: int) -> dict:
    return {"id": run_id, "name": f"stream-{i}", "status": "running", "spec": fake_spec(i), "spec_hash": "x" * 64,
            "group_hash": "y" * 64, "metrics": {}, "teachers": [], "device": "cpu", "host": HOST,
            "pid": os.getpid(), "created": time.time() - 60 + i, "started": time.time() - 60 + i,
            "finished": None, "error": None}


class Writer(threading.Thread):
    """Appends events to one run's events.jsonl: `rate` per second, an epoch event every `rate`-th."""

    def __init__(self, path: Path, rate: float, stop: threading.Event, count: int | None = None):
        super().__init__(daemon=True)
        self.path, self.rate, self.stop, self.count = path, rate, stop, count
        self.written = 0
        self.epoch, self.step = 1, 0

    def next_event(self) -> dict:
        self.written += 1
        if self.written % max(int(self.rate), 1) == 0:
            event = {"t": time.time(), "type": "epoch", "phase": "student", "index": 0, "epoch": self.epoch,
                     "metrics": {"train_agreement": random.random(), "test_agreement": random.random(),
                                 "test_acc": random.random(), "test_kl": random.random(),
                                 "train_loss": random.random(), "lr": 0.05}}
            self.epoch += 1
            self.step = 0
            return event
        self.step += 1
        return {"t": time.time(), "type": "progress", "phase": "student", "index": 0, "epoch": self.epoch,
                "step": self.step, "steps": STEPS}

    def run(self) -> None:
        with open(self.path, "a", buffering=1) as f:
            f.write(json.dumps({"t": time.time(), "type": "phase_start", "phase": "student", "index": 0,
                                "total": 1, "epochs": 100000, "steps_per_epoch": STEPS, "reused": False}) + "\n")
            if self.count is not None:  # as fast as possible, in chunks
                while self.written < self.count and not self.stop.is_set():
                    lines = [json.dumps(self.next_event()) for _ in range(min(500, self.count - self.written))]
                    f.write("\n".join(lines) + "\n")
                return
            period = 1.0 / self.rate
            next_at = time.monotonic()
            while not self.stop.is_set():
                f.write(json.dumps(self.next_event()) + "\n")
                next_at += period
                self.stop.wait(max(0.0, next_at - time.monotonic()))


class ProbeApp(KdtuiApp):
    """The app, with the batch handler and the redraw instrumented."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied: list[float] = []
        self.drawn: list[float] = []
        self._pending: list[float] = []
        self.label = "runs"
        self.by_label: dict[str, tuple[list[float], list[float]]] = {}

    def on_events_batch(self, message) -> None:
        super().on_events_batch(message)
        now = time.time()
        applied, _ = self.by_label.setdefault(self.label, ([], []))
        for events in message.events.values():
            for event in events:
                if isinstance(event, EpochMetrics):
                    applied.append(now - event.t)
                    self._pending.append(event.t)

    def _redraw_now(self) -> None:
        super()._redraw_now()
        now = time.time()
        _, drawn = self.by_label.setdefault(self.label, ([], []))
        drawn.extend(now - t for t in self._pending)
        self._pending.clear()


def make_workspace(root: Path, runs: int) -> tuple[Workspace, list[str]]:
    ws = Workspace(root)
    ids = [f"260101-000000-{i:04x}" for i in range(runs)]
    for run_id in ids:
        ws.create_run_dir(run_id)
    write_registry(ws, [running_record(run_id, i) for i, run_id in enumerate(ids)])
    return ws, ids


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def wait(pilot, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await pilot.pause(0.05)


async def latency(seconds: float, runs: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, ids = make_workspace(Path(tmp), runs)
        app = ProbeApp(ws)
        stop = threading.Event()
        async with app.run_test(size=(120, 40)) as pilot:
            await wait(pilot, lambda: app.loaded, 10)
            writers = [Writer(ws.events_path(i), rate, stop) for i in ids]
            for w in writers:
                w.start()
            await pilot.pause(seconds * 0.75)
            app.label = "open"  # the batches that wait while the live screen is built
            opened = time.perf_counter()
            app.open_run(ids[0])

            def mounted() -> bool:
                try:
                    return isinstance(app.screen, LiveScreen) and app.screen.query_one("#live-epochs").row_count > 0
                except Exception:
                    return False
            await wait(pilot, mounted, 10)
            open_s = time.perf_counter() - opened
            app.label = "live"
            await pilot.pause(seconds * 0.25)
            stop.set()
            for w in writers:
                w.join()
            await pilot.pause(0.5)
            written = sum(w.written for w in writers)
        print(f"latency: {runs} runs x ~{rate:g} events/s for {seconds:g} s, {written} events written "
              f"({written / seconds:.0f}/s)")
        for label, (applied, drawn) in app.by_label.items():
            if not applied:
                continue
            print(f"  {label:5s} screen: {len(applied)} epoch events; applied p50 {pct(applied, .5) * 1e3:.0f} ms, "
                  f"p95 {pct(applied, .95) * 1e3:.0f} ms, max {max(applied) * 1e3:.0f} ms; "
                  f"drawn p50 {pct(drawn, .5) * 1e3:.0f} ms, p95 {pct(drawn, .95) * 1e3:.0f} ms")
        print(f"  opening the live screen (16 runs streaming) took {open_s * 1e3:.0f} ms")
        everything = [d for _, drawn in app.by_label.values() for d in drawn]
        print(f"  all: drawn p50 {pct(everything, .5) * 1e3:.0f} ms, p95 {pct(everything, .95) * 1e3:.0f} ms "
              f"(target p95 < 250 ms)")


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def memory(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, ids = make_workspace(Path(tmp), runs)
        tracemalloc.start()
        app = KdtuiApp(ws)
        results = []
        async with app.run_test(size=(120, 40)) as pilot:
            await wait(pilot, lambda: app.loaded, 10)
            app.open_run(ids[0])
            await pilot.pause(0.3)
            done = 0
            for target, rate in ((1_000, 20), (10_000, 20), (20_000, 10**9)):
                stop = threading.Event()
                writers = []
                for run_id in ids:
                    # rate 10**9: no epoch event at all, only progress (a very long epoch)
                    w = Writer(ws.events_path(run_id), rate, stop, count=target - done)
                    w.written, w.epoch = done, done // 20 + 1
                    w.count = target
                    writers.append(w)
                done = target
                for w in writers:
                    w.start()
                for w in writers:
                    w.join()
                sizes = {i: os.path.getsize(ws.events_path(i)) for i in ids}
                await wait(pilot, lambda: all(app.streamer._offsets.get(i) == sizes[i] for i in ids), 120)
                await pilot.pause(0.5)
                gc.collect()
                current, _ = tracemalloc.get_traced_memory()
                rows = sum(len(app.live[i].rows) for i in ids)
                logs = sum(len(app.live[i].log) for i in ids)
                results.append((target, current / 2**20, rss_mb(), rows, logs))
        tracemalloc.stop()
        print(f"memory: {runs} runs, live screen of one open")
        for target, traced, rss, rows, logs in results:
            print(f"  after {target:>6,} events/run: traced {traced:6.1f} MiB, RSS {rss:6.1f} MiB; "
                  f"kept: {rows} epoch rows, {logs} log lines (all runs)")
        (a, ta, ra, rows_a, _), (b, tb, rb, rows_b, _), (c, tc, rc, rows_c, _) = results
        print(f"  1k -> 10k events/run: +{tb - ta:.1f} MiB for {rows_b - rows_a} more epoch rows "
              f"({(tb - ta) * 2**20 / max(rows_b - rows_a, 1):.0f} B per epoch point shown, all widgets included)")
        print(f"  10k -> 20k events/run of progress only: {tc - tb:+.1f} MiB (history the curves do not show "
              f"costs nothing)")


async def open_big(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        now = time.time()
        records = []
        for i in range(n):
            records.append({"id": f"250101-{i:06d}-abcd", "name": f"cifar100-kd-{i}", "status": "done",
                            "spec": fake_spec(i), "spec_hash": f"{i:064x}", "group_hash": f"{i // 3:064x}",
                            "metrics": {m: random.random() for m in ("train_agreement", "train_agreement_eval",
                                        "test_agreement", "test_kl", "test_acc", "test_nll", "test_ece",
                                        "teacher_test_acc", "teacher_train_acc", "train_loss", "lr")},
                            "teachers": [{"key": "k" * 64, "member": 0, "reused": False, "test_acc": 0.7}],
                            "device": "cuda:0", "host": HOST, "pid": 1, "created": now - n + i,
                            "started": now - n + i, "finished": now - n + i + 1, "error": None,
                            "schema_version": 1})
        write_registry(ws, records)
        size = sum(f.stat().st_size for f in (ws.root / "kdtui.index").glob("*.json"))
        firsts, fulls = [], []
        for _ in range(3):
            start = time.perf_counter()
            app = KdtuiApp(ws)
            async with app.run_test(size=(100, 30)) as pilot:
                from textual.widgets import DataTable

                def rows() -> int:
                    return app.screen.query_one(DataTable).row_count if app.loaded else 0
                await wait(pilot, lambda: rows() > 0, 30)
                firsts.append(time.perf_counter() - start)
                # The table holds rows near the view; End fills it down to the oldest run.
                await pilot.press("end")
                await wait(pilot, lambda: rows() == n and app.screen.current_id() == app.records[0]["id"], 60)
                fulls.append(time.perf_counter() - start - firsts[-1])
        print(f"open: runs screen on {n:,} finished runs (registry {size / 1e6:.1f} MB), from app start "
              f"(target < 1 s):\n  first screenful shown: median {statistics.median(firsts):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in firsts)})\n  then End, to the oldest of {n:,} rows: median "
              f"{statistics.median(fulls):.2f} s ({', '.join(f'{t:.2f}' for t in fulls)})")
        start = time.perf_counter()
        app = KdtuiApp(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            pass
        empty = tempfile.mkdtemp()
        start = time.perf_counter()
        app = KdtuiApp(Workspace(empty))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait(pilot, lambda: app.loaded, 10)
        print(f"  (the same app on an empty workspace: {time.perf_counter() - start:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--big", type=int, default=1000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    asyncio.run(latency(args.seconds, args.runs, args.rate))
    asyncio.run(memory(args.runs))
    asyncio.run(open_big(args.big))
    print("torch imported:", "torch" in sys.modules)


if __name__ == "__main__":
    main()
