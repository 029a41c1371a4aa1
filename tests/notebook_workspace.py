"""A tiny workspace for the notebook API's tests and docs/python.md: a temperature sweep written
through kdtui's own registry and event log (real TinyDB files, real events.jsonl).

τ ∈ {1, 4} × seed ∈ {0, 1, 2}: done, with a per-epoch history; τ=4 seed 3 failed at epoch 2;
τ=8 seed 0 is running (owned by this process, so it stays running).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from kdtui.core.eventlog import EventWriter
from kdtui.core.events import Done, EpochMetrics, Failed, PhaseStart
from kdtui.core.registry import RunStore
from kdtui.core.spec import parse_spec, spec_hashes
from kdtui.core.workspace import Workspace

EPOCHS = 3


def agreement(temperature: float, seed: int, epoch: int) -> float:
    """The test agreement the sweep's runs report: higher for τ=4, a little spread by seed."""
    return round(0.5 + 0.1 * epoch + (0.05 if temperature == 4 else 0.0) + 0.01 * seed, 6)


def _spec(temperature: float, seed: int) -> tuple[dict, str, str]:
    spec = parse_spec(f'name = "kd-sweep"\nseed = {seed}\ndevice = "cpu"\n[data]\ndataset = "digits"\n'
                      f'[student]\nepochs = {EPOCHS}\n[distill]\ntemperature = {temperature}\n')
    return spec.resolved().model_dump(mode="json", exclude_none=True), *spec_hashes(spec)


def build(root: Path) -> dict[str, dict]:
    """Write the workspace at `root`; returns its records by id, as stored."""
    ws = Workspace(root)
    store = RunStore(ws)
    points = [(t, s, "done") for t in (1.0, 4.0) for s in (0, 1, 2)] + [(4.0, 3, "failed"), (8.0, 0, "running")]
    records = {}
    for k, (temperature, seed, status) in enumerate(points):
        run_id = f"261203-1200{k:02d}-{0xa0 + k:04x}"
        spec, spec_hash, group_hash = _spec(temperature, seed)
        last = EPOCHS if status == "done" else 1
        history = [{"test_agreement": agreement(temperature, seed, e), "test_acc": round(0.7 + 0.05 * e, 6),
                    "test_kl": round(0.5 - 0.1 * e, 6)} for e in range(last + 1)]
        final = {**history[-1], "epoch": last, "teacher_test_acc": 0.9} if status == "done" else {}
        record = store.add({"id": run_id, "name": f"kd-sweep[distill.temperature={temperature:g},seed={seed}]",
                            "status": status, "spec": spec, "spec_hash": spec_hash, "group_hash": group_hash,
                            "metrics": final, "device": "cpu", "host": socket.gethostname(),
                            "pid": os.getpid() if status == "running" else None, "created": 1.7649e9 + k,
                            "started": 1.7649e9 + k + 1, "finished": 1.7649e9 + k + 60 if status != "running" else None,
                            "error": "loss is NaN (student, epoch 2)" if status == "failed" else None})
        writer = EventWriter(ws.events_path(run_id))
        writer.write(PhaseStart(phase="student", epochs=EPOCHS))
        for epoch, metrics in enumerate(history):
            writer.write(EpochMetrics(phase="student", index=0, epoch=epoch, metrics=metrics))
        if status == "done":
            writer.write(Done(metrics=final))
        elif status == "failed":
            writer.write(Failed(error=record["error"], phase="student", epoch=2))
        writer.close()
        records[run_id] = record
    return records
