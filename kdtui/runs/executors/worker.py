"""A background worker: it holds one device slot for its whole life and runs queued runs on it, one after
another, first in line first, until the line has none left for that slot; then it exits.

    python -m kdtui.cli worker --workspace DIR [--slots-per-gpu N] [RUN_ID ...]

(a hidden command of the one command line, which calls `serve`).

Started by kdtui.runs.executors.launcher, one per free slot. Given run ids (registered, `queued`), it
first puts them in line itself, then serves the line in this process.

Each run executes in a child forked for it, so that:
- CUDA_VISIBLE_DEVICES is set before that process initialises CUDA, and every run starts with a
  fresh CUDA context and heap, however many runs the worker serves;
- killing a run's process (its record's `pid`) interrupts that run only: the worker reconciles it
  to `interrupted` and goes on with the next run on the same slot;
- the worker itself never imports torch: it stays small while it waits between runs.
The child shares the slot's lock, so the slot stays held while the run lives even if its worker is
killed; such a run, when it ends, starts workers for the line as a launch would. A stop request (`kdtui runs stop`) reaches the run through its STOP file; SIGTERM or SIGINT to
the worker stops its current run the same way and ends the worker.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Sequence

from kdtui.core import lifecycle
from kdtui.core.events import DONE
from kdtui.core.registry import RegistryError, RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.launcher import start_workers
from kdtui.runs.executors.slots import HeldSlot, RunQueue, Slot, all_slots, plan_slots, run_device, slots_per_gpu_for, \
    visible_gpus

RUN_LOG = "worker.log"  # in the run's folder: what its process prints (tracebacks of crashes)


def serve(workspace: Workspace | str | Path, run_ids: Sequence[str] = (), *, slots_per_gpu: int | None = None) -> int:
    """Put `run_ids` (registered, queued) in line if given, then take a free slot the line needs and
    run the line's runs on it until none are left for it. Returns 0 (each run's outcome is in its
    record), 130 if asked to stop."""
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    store = RunStore(workspace)
    queue = RunQueue(workspace)
    gpus = visible_gpus()
    if run_ids:
        with queue.locked():
            queue.enqueue(store, list(run_ids), gpus)
    slots = all_slots(plan_slots(gpus, slots_per_gpu_for(workspace, slots_per_gpu)))
    with queue.locked():
        entries, _ = queue.waiting(store)
        wanted = {pool for entry in entries for pool in entry.get("pools", ())}
        held = next(filter(None, (queue.try_slot(s) for s in slots if s.pool in wanted)), None)
    if held is None:
        return 0  # the slots this line needs are all held: their workers serve it
    termination = _Termination()
    try:
        while not termination.requested:
            with queue.locked():
                entry = queue.take_next(store, held.slot.pool)
                if entry is None:
                    # Inside the line's lock, so that a launch enqueueing now sees the slot free
                    # and starts a worker for it (kdtui.runs.executors.launcher).
                    held.release()
                    return 0
                if not _claim(store, entry["run"], held.slot):
                    continue  # stopped since it was put in line: no process is started for it
            termination.child = _fork_run(workspace, entry, held, slots_per_gpu)
            _wait(termination.child)
            termination.child = None
            _settle(store)
        return 130
    finally:
        held.release()


def _claim(store: RunStore, run_id: str, slot: Slot) -> bool:
    """Give the taken run this worker's pid before it leaves the lock: a worker killed before its
    run starts leaves a run that reads as interrupted, not one that waits for nobody. False if the
    run is no longer queued (checked under the registry's lock: a `runs stop` may have come after
    the line was read). A registry that cannot be written now leaves the run to its own process,
    which reports it."""
    try:
        return lifecycle.take(store, run_id, worker=os.getpid(), slot=slot.name, gpu=slot.gpu) is not None
    except (RegistryError, OSError, ValueError):
        traceback.print_exc()
        return True


def _fork_run(workspace: Workspace, entry: dict, held: HeldSlot, slots_per_gpu: int | None) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    worker = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = _run_child(workspace, entry, held.slot)
        if os.getppid() != worker:
            # Our worker was killed while the run went on: hand the line on as a launch would, so
            # the runs behind this one are not left waiting for nobody.
            held.release()
            _quietly(lambda: start_workers(workspace, RunStore(workspace), slots_per_gpu=slots_per_gpu))
        os._exit(code)
    _quietly(lambda: RunStore(workspace).update(entry["run"], pid=pid))  # watch it from now on
    return pid


def _quietly(action) -> None:
    """Registry bookkeeping that must not end the worker: a missing or busy registry, a full disk.
    The run's own process reports those; the next reader of the registry settles the rest."""
    try:
        action()
    except (RegistryError, OSError, ValueError):
        traceback.print_exc()


def _run_child(workspace: Workspace, entry: dict, slot: Slot) -> int:
    """The forked process of one run: its own session and log, only its slot's GPU, then the run."""
    try:
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # the run installs its own stop handlers
        log = os.open(workspace.run_dir(entry["run"]) / RUN_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.update(slot.environment())  # before the run imports torch and initialises CUDA
        from kdtui.runs.execute import execute  # torch: only in the run's process, never in the worker

        record = execute(workspace, RunStore(workspace), entry["run"], retrain_teachers=entry.get("retrain_teachers"),
                         device=run_device(slot) or entry.get("device"))
        return 0 if record.get("skipped") or record.get("status") == DONE else 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _wait(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _settle(store: RunStore) -> None:
    """The run's process is gone: if it died without a final record (killed), say so now."""
    _quietly(lambda: lifecycle.reconcile(store))


class _Termination:
    """SIGTERM / SIGINT to the worker: stop the current run (it keeps its checkpoint), take no more."""

    def __init__(self):
        self.requested = False
        self.child: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self.child is not None:
            try:
                os.kill(self.child, signal.SIGTERM)
            except ProcessLookupError:
                pass
