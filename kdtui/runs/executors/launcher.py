"""Start background runs: put them in the workspace's line and start a worker for each free slot they can use.

There is no daemon. Workers (kdtui.runs.executors.worker) are detached OS processes, each holding one
slot and taking run after run from the line until it has none for that slot's pool. A 5,000-point
sweep on 2 slots starts 2 workers, not 5,000 processes.

Why no queued run is left without a worker: the launcher enqueues and counts free slots under the
line's lock, and a worker decides to exit (its pool has nothing left in the line) and lets its slot
go under that same lock. So either the worker looked after the new runs joined, and takes them, or
it let its slot go before the launcher counted, and the launcher starts a new worker for that slot.
A slot that stays held belongs to a live worker that will look at the line again before it exits.
A worker that is killed outright (SIGKILL) can leave runs in the line with no one to serve them;
they stay `queued`, `kdtui queue` lists them, and the next launch starts workers for the whole line,
not only its own runs (`start_workers` alone does that too).
"""
from __future__ import annotations

import os
import subprocess
import sys

from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import QUEUE_DIR, RunQueue, all_slots, demand, plan_slots, slots_per_gpu_for, \
    visible_gpus

WORKERS_LOG = "workers.log"  # in <workspace>/queue: what the workers themselves print (each run logs in its folder)


def launch_detached(workspace: Workspace, store: RunStore, run_ids: list[str], *, retrain_teachers: bool = False,
                    device: str | None = None, slots_per_gpu: int | None = None) -> list[int]:
    """Queue registered runs in the order given and start as many workers as there are free slots
    for the line (at most one per waiting run); returns the new workers' pids (none when every
    slot the line needs is held: its workers take the new runs when their current ones end).
    Raises QueueError, before anything is queued, for a bad slot setting or a device no slot fits."""
    per_gpu = slots_per_gpu_for(workspace, slots_per_gpu)
    gpus = visible_gpus()
    queue = RunQueue(workspace)
    with queue.locked():
        queue.enqueue(store, run_ids, gpus, retrain_teachers=retrain_teachers, device=device)
        count = _workers_needed(queue, store, plan_slots(gpus, per_gpu))
    return [_start_worker(workspace, slots_per_gpu) for _ in range(count)]


def start_workers(workspace: Workspace, store: RunStore, *, slots_per_gpu: int | None = None) -> list[int]:
    """Start workers for runs already in the line that wait with a slot free (their worker was
    killed); returns the new workers' pids."""
    return launch_detached(workspace, store, [], slots_per_gpu=slots_per_gpu)


def _workers_needed(queue: RunQueue, store: RunStore, slots: dict) -> int:
    entries, _ = queue.waiting(store)
    return len(demand(entries, queue.free_slots(all_slots(slots))))


def worker_command(workspace: Workspace, slots_per_gpu: int | None) -> list[str]:
    """How a worker process is started (the launch options travel in the line, per run)."""
    command = [sys.executable, "-m", "kdtui.cli", "worker", "--workspace", str(workspace.root)]
    if slots_per_gpu is not None:
        command += ["--slots-per-gpu", str(slots_per_gpu)]
    return command


def _start_worker(workspace: Workspace, slots_per_gpu: int | None) -> int:
    """One worker in its own session (no controlling terminal, so a closed terminal's SIGHUP never
    reaches it), stdin from /dev/null, output appended to the queue's log."""
    with open(workspace.root / QUEUE_DIR / WORKERS_LOG, "ab") as log:
        process = subprocess.Popen(worker_command(workspace, slots_per_gpu), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                   cwd=os.getcwd())
    return process.pid
