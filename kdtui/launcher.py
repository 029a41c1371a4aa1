"""Start runs as detached OS processes that outlive the terminal and the SSH link."""
from __future__ import annotations

import os
import subprocess
import sys

from kdtui.registry import RunStore
from kdtui.workspace import Workspace

WORKER_LOG = "worker.log"


def launch_detached(workspace: Workspace, store: RunStore, run_ids: list[str], *, retrain_teachers: bool = False,
                    device: str | None = None) -> int:
    """One background worker runs `run_ids` in order; returns its pid.

    The worker is in its own session (no controlling terminal, so a closed terminal's SIGHUP never
    reaches it), with stdin from /dev/null and output to the first run's folder.
    """
    command = [sys.executable, "-m", "kdtui.worker", "--workspace", str(workspace.root), *run_ids]
    if retrain_teachers:
        command.append("--retrain-teachers")
    if device:
        command += ["--device", device]
    log_path = workspace.run_dir(run_ids[0]) / WORKER_LOG
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True, cwd=os.getcwd())
    for run_id in run_ids:  # a queued run whose worker dies is reconciled to `interrupted`
        store.update(run_id, pid=process.pid)
    return process.pid
