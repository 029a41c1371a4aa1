"""`kdtui run SPEC --nproc N`: one run as N data-parallel processes under torchrun.

`run_data_parallel` starts them and follows the run; each process is this module's `run_rank`,
behind the hidden command `kdtui ddp-rank`:

    python -m torch.distributed.run --standalone --nproc_per_node N -m kdtui.cli ddp-rank --workspace DIR RUN_ID

Every process trains its share of each batch (kernels.distributed); rank 0 writes the events, the
checkpoints and the record, exactly as a single-process run does.
"""
from __future__ import annotations

import subprocess
import sys

from kdtui.core.eventlog import follow
from kdtui.core import lifecycle
from kdtui.core.events import ACTIVE_STATUSES, DONE, STOPPED
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.execute import execute
from kdtui.runs.executors.local import LocalExecutor


class DataParallelExecutor(LocalExecutor):
    """The foreground executor with each run as `nproc` torchrun processes."""

    def __init__(self, workspace: Workspace, store: RunStore, *, nproc: int, **options):
        super().__init__(workspace, store, **options)
        self.nproc = nproc

    def run_one(self, run_id: str, on_event) -> dict:
        return run_data_parallel(self.workspace, self.store, run_id, retrain_teachers=self.retrain_teachers,
                                 on_event=on_event, nproc=self.nproc)


def run_data_parallel(ws: Workspace, store: RunStore, run_id: str, *, retrain_teachers: bool, on_event,
                      nproc: int) -> dict:
    """One run as `nproc` data-parallel processes under torchrun, followed through its event log
    (rank 0 writes it). Ctrl-C reaches torchrun too, which stops the processes cleanly."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "kdtui.cli", "ddp-rank", "--workspace", str(ws.root), run_id]
    if retrain_teachers:
        command.append("--retrain-teachers")
    with open(ws.run_dir(run_id) / "torchrun.log", "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        for event in follow(ws.events_path(run_id), stop=lambda: process.poll() is not None):
            on_event(event)
    except KeyboardInterrupt:
        pass  # the processes got the same Ctrl-C; wait for them to stop and record it
    while True:
        try:
            process.wait()
            break
        except KeyboardInterrupt:
            continue
    record = store.get(run_id)
    if record["status"] in ACTIVE_STATUSES:  # every process has exited: rank 0 never recorded an end
        record = lifecycle.fail(store, run_id, f"torchrun exited with {process.returncode}; "
                                               f"see {ws.run_dir(run_id) / 'torchrun.log'}")
    return record


def run_rank(workspace_root, run_id: str, *, retrain_teachers: bool = False) -> int:
    """This torchrun process's share of the run; its exit status."""
    workspace = Workspace(workspace_root)
    store = RunStore(workspace)
    record = store.get(run_id)
    if record is None:
        print(f"kdtui ddp-rank: no run {run_id} in {workspace.root}", file=sys.stderr)
        return 2

    import torch.distributed

    from kernels.distributed import init_from_torchrun

    shards, device = init_from_torchrun((record.get("spec") or {}).get("device") or "auto")
    try:
        final = execute(workspace, store, run_id, retrain_teachers=retrain_teachers, device=device,
                        shards=shards)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not shards.main:
        return 0  # the main process's exit status (and the record) carry the run's outcome
    if final.get("status") == STOPPED:
        return 130
    return 0 if final.get("status") == DONE else 1
