"""`kdtui run SPEC --executor ray`: the runs of a sweep as tasks on a Ray cluster, watched from here.

The box where kdtui runs keeps the workspace. Each run becomes one Ray task that asks for one CPU
(and `--gpus-per-run` GPUs) and runs the ordinary runner in a workspace of the worker box's own
(`$KDTUI_RAY_WORKSPACE`, else `~/.cache/kdtui/ray-workspace`): its checkpoints and teacher store stay
there, and the record says where. Every event the task writes is also put on a Ray queue (an actor);
this process, the driver, appends them to the local `events.jsonl` as they arrive, so the app, `runs
tail` and the registry work as for local runs. Nothing needs a shared file system.

`kdtui runs stop` writes the run's STOP file here; the driver sees it and cancels the run's Ray task.

    kdtui ray-driver --workspace DIR [--address ADDR] [--gpus-per-run N] RUN_ID...

(a hidden command, `drive_detached`) is the detached driver behind `--executor ray --detach`.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Callable

from kdtui.core.eventlog import EventWriter
from kdtui.core.registry import RunStore
from kdtui.core import lifecycle
from kdtui.core.events import DONE, STOPPED, Log
from kdtui.core.workspace import STOP_FILE, Workspace
from kdtui.runs.executors import Started

INSTALL_HINT = "--executor ray needs Ray: pip install 'kdtui[ray]'"
WORKER_WORKSPACE_ENV = "KDTUI_RAY_WORKSPACE"
POLL_S = 0.2
# Read back from the task's final record into the local one (with its status, metrics and error).
FINAL_FIELDS = ("teachers", "device", "started", "finished", "worker_host", "checkpoints")


class RayUnavailable(RuntimeError):
    pass


def require_ray() -> None:
    """Fail early, with one line, where Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None


def run_on_worker(run_id: str, spec_toml: str, events, retrain_teachers: bool) -> dict:
    """The Ray task's body, on the worker box: register the run in the worker's workspace under the
    same id, run it there, and put each event on `events` as (run id, event)."""
    import ray

    from kdtui.runs.execute import execute
    from kdtui.core.lifecycle import new_record
    from kdtui.core.spec import parse_spec

    workspace = Workspace(os.environ.get(WORKER_WORKSPACE_ENV) or "~/.cache/kdtui/ray-workspace")
    store = RunStore(workspace)
    store.create_if_missing()  # before this task's folder exists (other tasks share the workspace)
    folder = workspace.run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.toml").write_text(spec_toml)
    if store.get(run_id) is None:
        store.add(new_record(run_id, parse_spec(spec_toml, source=f"run {run_id}"), pid=os.getpid()))
    else:  # the same run sent here again
        lifecycle.requeue(store, run_id, pid=os.getpid(), host=socket.gethostname())
    events.put((run_id, Log(f"ray task on {socket.gethostname()} "
                            f"(node {ray.get_runtime_context().get_node_id()[:12]})").to_dict()))
    record = execute(workspace, store, run_id, retrain_teachers=retrain_teachers,
                     on_event=lambda event: events.put((run_id, event)))
    return {**record, "worker_host": socket.gethostname(), "checkpoints": f"{socket.gethostname()}:{folder}"}


def drive(workspace: Workspace, store: RunStore, run_ids: list[str], *, address: str | None = None,
          gpus_per_run: float = 0, retrain_teachers: bool = False,
          on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Submit every run as a Ray task and follow them to their end; returns their final records."""
    import ray
    from ray.util.queue import Empty, Queue

    env_vars = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", WORKER_WORKSPACE_ENV)
                if k in os.environ}
    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env_vars} if env_vars else None)
    try:
        events = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(run_on_worker).options(num_cpus=1, num_gpus=gpus_per_run, max_retries=0)
        running: dict = {}
        for run_id in run_ids:
            spec_toml = (workspace.run_dir(run_id) / "spec.toml").read_text()
            running[task.remote(run_id, spec_toml, events, retrain_teachers)] = run_id
            store.update(run_id, executor="ray", pid=os.getpid(), host=socket.gethostname())
        writers: dict[str, EventWriter] = {}
        cancelled: set[str] = set()
        finished: dict[str, dict] = {}

        def drain() -> None:
            while True:
                try:
                    batch = events.get_nowait_batch(max(events.qsize(), 1))
                except Empty:
                    return
                for run_id, event in batch:
                    if run_id not in writers:
                        writers[run_id] = EventWriter(workspace.events_path(run_id))
                        lifecycle.start(store, run_id)
                    writers[run_id].write(event)

        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=POLL_S)
                drain()  # a task puts its last event before it returns: all of them are here now
                for ref in ready:
                    run_id = running.pop(ref)
                    finished[run_id] = _final(store, run_id, ref, run_id in cancelled)
                    if on_record is not None:
                        on_record(finished[run_id])
                for ref, run_id in running.items():
                    if run_id not in cancelled and (workspace.run_dir(run_id) / STOP_FILE).exists():
                        cancelled.add(run_id)
                        ray.cancel(ref)
        finally:
            for writer in writers.values():
                writer.close()
        return [finished[run_id] for run_id in run_ids]
    finally:
        ray.shutdown()


def _final(store: RunStore, run_id: str, ref, was_cancelled: bool) -> dict:
    import ray

    try:
        remote = ray.get(ref)
    except (ray.exceptions.TaskCancelledError, KeyboardInterrupt):
        return lifecycle.stop(store, run_id)
    except ray.exceptions.RayError as exc:  # the task raised, or its worker or node died
        if was_cancelled:
            return lifecycle.stop(store, run_id)
        return lifecycle.fail(store, run_id, f"ray task failed: {type(exc).__name__}: {exc}".splitlines()[0])
    if was_cancelled and remote.get("status") != DONE:
        # The cancel reaches the task as an interrupt wherever it is (a save, a teacher's training)
        # and may come back as a failure; the user asked for a stop, and a stop keeps the checkpoint.
        return lifecycle.stop(store, run_id)
    return lifecycle.end(store, run_id, remote.get("status"), metrics=remote.get("metrics"), error=remote.get("error"),
                         **{k: remote.get(k) for k in FINAL_FIELDS})


class RayExecutor:
    """Runs as Ray tasks: followed to their end from this process, or (`detach`) from a background
    driver that owns them from then on (a dead driver's runs read as interrupted)."""

    def __init__(self, workspace: Workspace, store: RunStore, *, address: str | None = None,
                 gpus_per_run: float = 0, retrain_teachers: bool = False, detach: bool = False,
                 on_record: Callable[[dict], None] | None = None):
        self.workspace, self.store, self.detach, self.on_record = workspace, store, detach, on_record
        self.options = {"address": address, "gpus_per_run": gpus_per_run, "retrain_teachers": retrain_teachers}

    def start(self, run_ids: list[str]) -> Started:
        if self.detach:
            pid = launch_detached(self.workspace, run_ids, **self.options)
            self.store.update_many(run_ids, pid=pid)
            return Started(pids=[pid])
        records = drive(self.workspace, self.store, run_ids, on_record=self.on_record, **self.options)
        return Started(records=records, interrupted=any(r["status"] == STOPPED for r in records))


def launch_detached(workspace: Workspace, run_ids: list[str], *, address: str | None, gpus_per_run: float,
                    retrain_teachers: bool) -> int:
    """The driver as a background process of its own session (it outlives the terminal)."""
    import subprocess

    command = [sys.executable, "-m", "kdtui.cli", "ray-driver", "--workspace", str(workspace.root),
               "--gpus-per-run", str(gpus_per_run), *run_ids]
    if address:
        command += ["--address", address]
    if retrain_teachers:
        command.append("--retrain-teachers")
    with open(workspace.run_dir(run_ids[0]) / "ray-driver.log", "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True, cwd=os.getcwd())
    return process.pid


def drive_detached(workspace_root, run_ids: list[str], *, address: str | None, gpus_per_run: float,
                   retrain_teachers: bool) -> int:
    """The detached driver's work (`kdtui ray-driver`): drive the runs to the end; its exit status."""
    workspace = Workspace(workspace_root)
    records = drive(workspace, RunStore(workspace), run_ids, address=address, gpus_per_run=gpus_per_run,
                    retrain_teachers=retrain_teachers)
    return 0 if all(r["status"] == DONE for r in records) else 1
