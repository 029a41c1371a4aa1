"""Start background runs: put them in the workspace's line and start a worker for each free slot they can use.

There is no daemon. Workers (kdtui.runs.executors.worker) are detached OS processes, each holding one
slot and taking run after run from the line until it has none for that slot's pool. A 5,000-point
sweep on 2 slots starts 2 workers, not 5,000 processes.

Why no queued run is left without a worker: the launcher enqueues, and then counts free slots, each
under the line's lock, and a worker decides to exit (its pool has nothing left in the line) and lets its slot
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
from kdtui.runs.executors import Started
from kdtui.runs.executors.slots import QUEUE_DIR, RunQueue, all_slots, demand, plan_slots, pools_for_device, \
    slots_per_gpu_for, visible_gpus

WORKERS_LOG = "workers.log"  # in <workspace>/queue: what the workers themselves print (each run logs in its folder)


class QueueExecutor:
    """The background executor: runs join the workspace's line and a worker starts for each free slot
    they can use. Made before anything is registered, so that a bad slot setting (QueueError) fails
    first; `pools` checks a run's device the same way."""

    def __init__(self, workspace: Workspace, store: RunStore, *, retrain_teachers: bool = False,
                 device: str | None = None, slots_per_gpu: int | None = None):
        self.workspace, self.store = workspace, store
        self.retrain_teachers, self.device, self.slots_per_gpu = retrain_teachers, device, slots_per_gpu
        self.per_gpu = slots_per_gpu_for(workspace, slots_per_gpu)
        self.gpus = visible_gpus()
        self.queue = RunQueue(workspace)

    def pools(self, spec_device: str | None) -> list[str]:
        """The slot pools a run may use (QueueError for a device no slot fits, `cuda:2` on one GPU)."""
        return pools_for_device(self.device or spec_device or "auto", self.gpus)

    def start(self, run_ids: list[str]) -> Started:
        """Queue registered runs in the order given and start their workers."""
        with self.queue.locked():
            self.queue.enqueue(self.store, run_ids, self.gpus, retrain_teachers=self.retrain_teachers,
                               device=self.device)
        return Started(pids=self.start_workers())

    def line_entries(self, run_ids: list[str], pools: list[list[str]]) -> list[dict]:
        """Line entries for runs about to be registered (RunService.submit_detached)."""
        return [self.queue.entry(run_id, run_pools, retrain_teachers=self.retrain_teachers, device=self.device)
                for run_id, run_pools in zip(run_ids, pools)]

    def start_workers(self) -> list[int]:
        """As many workers as there are free slots for the line (at most one per waiting run); their
        pids (none when every slot the line needs is held: its workers take the new runs when their
        current ones end)."""
        with self.queue.locked():
            entries, _ = self.queue.waiting(self.store)
            count = len(demand(entries, self.queue.free_slots(all_slots(plan_slots(self.gpus, self.per_gpu)))))
        return [_start_worker(self.workspace, self.slots_per_gpu) for _ in range(count)]


def start_workers(workspace: Workspace, store: RunStore, *, slots_per_gpu: int | None = None) -> list[int]:
    """Start workers for runs already in the line that wait with a slot free (their worker was
    killed); returns the new workers' pids."""
    return QueueExecutor(workspace, store, slots_per_gpu=slots_per_gpu).start_workers()


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
