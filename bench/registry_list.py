"""How long listing the registry takes when it holds 1,000 finished runs.

Each record is shaped like a real 300-epoch run's summary: the resolved spec (~60 fields), ~12
final metrics, a teacher list. The per-epoch history is NOT in the registry (it lives in each run's
events.jsonl), which is what keeps this file small. Prints the file size and the median of 5 timings
of `RunStore.all()` on a fresh store (so the first-read reconciliation is included), plus a few
other operations for scale.

    python bench/registry_list.py [--runs 1000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import hashlib
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdtui.core.registry import TABLE, AtomicJSONStorage, RunStore, reconcile  # noqa: E402
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


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-history-comparison", dest="history_comparison", action="store_false",
                        help="skip timing a registry that embeds the per-epoch history")
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        docs = [record(i, rng) for i in range(args.runs)]
        AtomicJSONStorage(ws.registry_path).write({TABLE: {str(i + 1): d for i, d in enumerate(docs)}})
        size = ws.registry_path.stat().st_size

        def list_fresh() -> None:
            store = RunStore(ws)  # fresh instance: the first read reconciles
            assert len(store.all()) == args.runs

        warm = RunStore(ws)
        warm.all()
        t_list = timed(list_fresh, args.repeat)
        t_list_warm = timed(warm.all, args.repeat)
        t_reconcile = timed(lambda: reconcile(warm, ws), args.repeat)
        t_resolve = timed(lambda: warm.resolve(docs[args.runs // 2]["id"][:13]), args.repeat)
        counter = iter(range(10**9))
        t_add = timed(lambda: warm.add({**docs[0], "id": f"new-{next(counter)}"}), args.repeat)
        t_update = timed(lambda: warm.update(docs[1]["id"], status="done"), args.repeat)

        # The design choice this measures: the same registry with each run's 300-epoch history
        # embedded (what a naive TinyDB tracker would store).
        t_hist = size_hist = None
        if args.history_comparison:
            fat = Workspace(Path(tmp) / "fat")
            history = [{"epoch": e, **{m: rng.random() for m in METRICS if m != "epoch"}}
                       for e in range(301)]
            AtomicJSONStorage(fat.registry_path).write(
                {TABLE: {str(i + 1): {**d, "history": history} for i, d in enumerate(docs)}})
            size_hist = fat.registry_path.stat().st_size
            t_hist = timed(lambda: RunStore(fat).all(), min(args.repeat, 3))

    ms = lambda s: f"{s * 1000:8.1f} ms"  # noqa: E731
    print(f"registry: {args.runs} finished runs, spec {count_fields(docs[0]['spec'])} fields, "
          f"{len(METRICS)} metrics, {len(docs[0]['teachers'])} teachers, no history")
    print(f"file size:                         {size / 1e6:8.2f} MB ({size / args.runs / 1e3:.2f} kB/run)")
    print(f"RunStore.all(), fresh (+reconcile): {ms(t_list)}   (median of {args.repeat})")
    print(f"RunStore.all(), already reconciled: {ms(t_list_warm)}")
    print(f"reconcile() alone (reads once):     {ms(t_reconcile)}")
    print(f"resolve(prefix):                    {ms(t_resolve)}")
    print(f"add() one run (lock+read+write):    {ms(t_add)}")
    print(f"update() one run:                   {ms(t_update)}")
    if t_hist is not None:
        print(f"with 300-epoch history embedded:   {size_hist / 1e6:8.2f} MB, all() {ms(t_hist)} "
              f"-> {size_hist / size:.0f}x the bytes, {t_hist / t_list:.0f}x the time")


if __name__ == "__main__":
    main()
