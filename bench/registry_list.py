"""The registry at lab scale: 10,000 finished runs, read, listed and updated.

Each record is shaped like a real 300-epoch run's summary: the resolved spec (~60 fields), ~12
final metrics, a teacher list (the per-epoch history lives in each run's events.jsonl). The runs are
registered through `RunStore.add_many` (each run's record.json included), then timed (medians):

- a cold read: `RunStore.all()` in a process that has not read the index yet (what `kdtui runs
  list` and the app's first screenful wait for), and a warm one (the app's next poll);
- `kdtui runs list` as a user runs it (a new process, table output), target < 1 s;
- one `RunStore.update`, target < 100 ms, and the app's read after it (one shard reparsed);
- `get` by a long-lived store (a worker's poll), `resolve` of a prefix, `reindex`.

    python bench/registry_list.py [--runs 10000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import hashlib
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core import registry  # noqa: E402
from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402

METRICS = ("train_agreement", "train_agreement_eval", "test_agreement", "test_kl", "test_acc",
           "test_nll", "test_ece", "teacher_test_acc", "teacher_train_acc", "train_loss", "lr", "epoch")


def resolved_spec(rng: random.Random, seed: int) -> dict:
    def opt(epochs: int) -> dict:
        return {"model": rng.choice(["resnet20", "resnet56", "lenet5", "vgg16"]), "norm": "batch",
                "epochs": epochs, "batch_size": 128, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9,
                "nesterov": True, "weight_decay": 1e-4, "schedule": "cosine"}

    return {
        "name": f"cifar100-resnet56-kd-{seed}", "seed": seed, "device": "cuda",
        "data": {"dataset": "cifar100", "root": "~/.cache/kdtui/data", "download": True,
                 "teacher_subset": 0, "split": 0.0, "teacher_split": 0, "student_splits": [0],
                 "extra": []},
        "teacher": {**opt(200), "members": 3, "augment": ["crop", "hflip"]},
        "student": {**opt(300), "init": "random", "init_lambda": 0.0},
        "distill": {"loss": "kl", "temperature": rng.choice([1.0, 4.0]), "alpha": 0.0,
                    "augment": ["crop", "hflip", "mixup"], "mixup_alpha": 1.0},
        "eval": {"every": 1, "batch_size": 1024, "clean_train_agreement": True, "ece_bins": 15},
        "checkpoint": {"every": 10, "keep": 2, "resume": True},
        "compute": {"channels_last": True, "amp": "bf16", "compile": False, "cudnn_benchmark": True,
                    "num_threads": 0, "deterministic": False},
        "sweep": {"index": seed, "total": 5, "key": "seed"},
        "resolved": {"num_classes": 100, "image_size": [3, 32, 32], "train_size": 50000,
                     "test_size": 10000, "steps_per_epoch": 391, "teacher_key": f"t{seed:04d}"},
    }


def count_fields(d: dict) -> int:
    return sum(count_fields(v) if isinstance(v, dict) else 1 for v in d.values())


def record(i: int, rng: random.Random) -> dict:
    spec = resolved_spec(rng, i % 5)
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()
    created = 1.76e9 + i * 3600
    return {
        "id": f"2511{i // 100:02d}-{i % 100:02d}0000-{i:04x}", "name": spec["name"],
        "status": rng.choice(["done"] * 8 + ["failed", "stopped"]), "spec": spec,
        "spec_hash": digest, "group_hash": digest[::-1],
        "metrics": {m: rng.random() for m in METRICS},
        "teachers": [{"key": hashlib.sha1(f"{i}{k}".encode()).hexdigest()[:16], "model": "resnet56",
                      "test_acc": rng.random(), "train_acc": rng.random(), "reused": k > 0,
                      "epochs": 200} for k in range(3)],
        "device": "cuda:0", "host": socket.gethostname(), "pid": 10_000 + i,
        "created": created, "started": created + 1, "finished": created + 3000, "error": None,
        "schema_version": 1,
    }


def timed(fn, repeat: int, before=None) -> float:
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def forget_parsed() -> None:
    """As if this were a new process: nothing of the index parsed yet."""
    registry._PARSED.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        docs = [record(i, rng) for i in range(args.runs)]
        t0 = time.perf_counter()
        RunStore(ws).add_many(docs)
        t_register = time.perf_counter() - t0
        index = [f for f in (ws.root / registry.INDEX_DIR).glob("*.json")]
        size = sum(f.stat().st_size for f in index)

        def list_fresh() -> None:
            assert len(RunStore(ws).all()) == args.runs  # a fresh store, as a new process has

        t_cold = timed(list_fresh, args.repeat, before=forget_parsed)
        t_warm = timed(list_fresh, args.repeat)
        worker = RunStore(ws)
        worker.all()
        t_get = timed(lambda: worker.get(docs[args.runs // 3]["id"]), args.repeat)
        t_resolve = timed(lambda: RunStore(ws).resolve(docs[args.runs // 2]["id"][:15]), args.repeat)
        statuses = iter(["done", "failed"] * args.repeat)
        t_update = timed(lambda: worker.update(docs[1]["id"], status=next(statuses)), args.repeat)

        def update_then_read() -> None:
            worker.update(docs[2]["id"], status=next(statuses, "done"))
            t0 = time.perf_counter()
            RunStore(ws).all()
            reads.append(time.perf_counter() - t0)

        reads: list[float] = []
        statuses = iter(["done", "failed"] * args.repeat)
        timed(update_then_read, args.repeat)
        t_read_after = statistics.median(reads)

        env = {**os.environ, "KDTUI_HOME": str(ws.root), "COLUMNS": "120"}
        cli = [sys.executable, "-m", "kdtui.cli", "runs", "list"]
        t_cli = timed(lambda: subprocess.run(cli, env=env, check=True, capture_output=True), args.repeat)
        t_cli_json = timed(lambda: subprocess.run([*cli, "--json"], env=env, check=True, capture_output=True),
                           max(args.repeat // 2, 1))
        t_cli_none = timed(lambda: subprocess.run([sys.executable, "-m", "kdtui.cli", "--version"], env=env,
                                                  check=True, capture_output=True), args.repeat)
        t_reindex = timed(lambda: RunStore(ws).reindex(), 1)

    ms = lambda s: f"{s * 1000:8.1f} ms"  # noqa: E731
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"median of {args.repeat}")
    print(f"registry: {args.runs:,} finished runs, spec {count_fields(docs[0]['spec'])} fields, "
          f"{len(METRICS)} metrics, {len(docs[0]['teachers'])} teachers, no history")
    print(f"index: {len(index)} shards, {size / 1e6:.2f} MB ({size / args.runs / 1e3:.2f} kB/run)")
    print(f"add_many() of all {args.runs:,} (record.json each):  {t_register:8.2f} s")
    print(f"RunStore.all(), cold (new process):        {ms(t_cold)}   <- the app's first screenful waits for this")
    print(f"RunStore.all(), warm (nothing changed):    {ms(t_warm)}")
    print(f"RunStore.all() after one update:           {ms(t_read_after)}")
    print(f"update() one run (target < 100 ms):        {ms(t_update)}")
    print(f"get() by a long-lived store:               {ms(t_get)}")
    print(f"resolve(prefix), fresh store:              {ms(t_resolve)}")
    print(f"`kdtui runs list` (target < 1 s):          {ms(t_cli)}   (`kdtui --version`: {ms(t_cli_none)})")
    print(f"`kdtui runs list --json`:                  {ms(t_cli_json)}")
    print(f"reindex() from {args.runs:,} record.json files:  {ms(t_reindex)}")


if __name__ == "__main__":
    main()
