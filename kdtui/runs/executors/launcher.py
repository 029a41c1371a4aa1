"""Start runs as detached OS processes that outlive the terminal and the SSH link, through the queue."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from kdtui.core.registry import RunStore
from kdtui.runs.executors.slots import RunQueue
from kdtui.core.workspace import Workspace

WORKER_LOG = "worker.log"


def launch_detached(workspace: Workspace, store: RunStore, run_ids: list[str], *, retrain_teachers: bool = False,
                    device: str | None = None, slots_per_gpu: int | None = None) -> list[int]:
    """One background worker per run, queued in the order given; returns their pids.

    Each worker waits for a device slot (kdtui.runs.executors.slots), so a sweep runs as many points at once as
    there are free slots. Workers are in their own session (no controlling terminal, so a closed
    terminal's SIGHUP never reaches them), with stdin from /dev/null and output to the run's folder.
    """
    queue = RunQueue(workspace)
    pids = []
    for run_id in run_ids:
        command = [sys.executable, "-m", "kdtui.runs.executors.worker", "--workspace", str(workspace.root), run_id]
        if retrain_teachers:
            command.append("--retrain-teachers")
        if device:
            command += ["--device", device]
        if slots_per_gpu:
            command += ["--slots-per-gpu", str(slots_per_gpu)]
        enqueued = time.time_ns()  # taken before the start: the place in line is the launch order
        with open(workspace.run_dir(run_id) / WORKER_LOG, "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, close_fds=True, cwd=os.getcwd())
        queue.enqueue(run_id, enqueued, process.pid)
        store.update(run_id, pid=process.pid)  # a queued run whose worker dies is reconciled to `interrupted`
        pids.append(process.pid)
    return pids
