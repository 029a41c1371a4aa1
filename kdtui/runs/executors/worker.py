"""The background process behind `kdtui run --detach` and launches from the app.

    python -m kdtui.runs.executors.worker --workspace DIR RUN_ID [RUN_ID ...] [--retrain-teachers] [--device D]
                           [--slots-per-gpu N]

For each given (already registered, `queued`) run: wait in the workspace's queue for a device slot
(kdtui.runs.executors.slots), then run it holding that slot. A run stopped or removed while it waits is skipped. The
launcher starts one worker per run, so a sweep spreads over every free slot.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from kdtui.core.registry import RunStore
from kdtui.core.events import DONE, QUEUED, STOPPED
from kdtui.runs.execute import execute
from kdtui.runs.executors.slots import RunQueue, check_slots_per_gpu, plan_slots, pools_for_device, read_slots_per_gpu, \
    run_device, visible_gpus
from kdtui.core.workspace import STOP_FILE, Workspace

# While a run waits, its STOP file and folder are checked at every poll (cheap), the registry this
# often (it is read whole, and dozens of runs may be waiting).
STATUS_CHECK_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdtui.runs.executors.worker")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--retrain-teachers", action="store_true")
    parser.add_argument("--device")
    parser.add_argument("--slots-per-gpu", type=int)
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args(argv)
    workspace = Workspace(args.workspace)
    store = RunStore(workspace)
    queue = RunQueue(workspace)
    per_gpu = check_slots_per_gpu(args.slots_per_gpu) if args.slots_per_gpu else read_slots_per_gpu(workspace)
    gpus = visible_gpus()
    slots = plan_slots(gpus, per_gpu)
    worst = 0
    for run_id in args.run_ids:
        record = store.get(run_id)
        if record is None or record["status"] != QUEUED:
            continue  # removed, or stopped while it waited
        device = args.device or (record.get("spec") or {}).get("device") or "auto"
        held = queue.wait_for_slot(run_id, pools_for_device(device, gpus), slots, _gave_up(workspace, store, run_id))
        if held is None:
            continue  # stopped or removed while it waited in line
        slot, lock = held
        try:
            os.environ.update(slot.environment())  # before the run imports torch and initialises CUDA
            store.update(run_id, slot=slot.name, gpu=slot.gpu)
            record = execute(workspace, store, run_id, retrain_teachers=args.retrain_teachers,
                             device=run_device(slot) or args.device)
        finally:
            lock.release()
        if record.get("skipped"):
            continue  # stopped or removed while this process started up
        if record["status"] == STOPPED:
            return 130
        worst = max(worst, 0 if record["status"] == DONE else 1)
    return worst


def _gave_up(workspace: Workspace, store: RunStore, run_id: str):
    """True once the waiting run was stopped (`kdtui runs stop` writes STOP and marks it) or removed."""
    folder = workspace.run_dir(run_id)
    next_check = 0.0

    def gave_up() -> bool:
        nonlocal next_check
        if not folder.exists() or (folder / STOP_FILE).exists():
            return True
        now = time.monotonic()
        if now >= next_check:
            next_check = now + STATUS_CHECK_S
            record = store.get(run_id)
            return record is None or record["status"] != QUEUED
        return False
    return gave_up


if __name__ == "__main__":
    sys.exit(main())
