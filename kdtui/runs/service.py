"""The run service: what a person asks of runs. The CLI and the app both call it.

submit (register a sweep's points, one registry write), launch (start them in the background through
the queue), stop, resume, remove, and the bookkeeping between (requeue, release what this process
owns). It never imports torch or the code that executes a run (kdtui.runs.execute): running in the
foreground is the CLI's business (kdtui.runs.executors.local), running in the background is a worker
process's. Each status it sets goes through kdtui.core.lifecycle.
"""
from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from kdtui.core import lifecycle
from kdtui.core.events import ACTIVE_STATUSES, QUEUED, RESUMABLE_STATUSES, RUNNING
from kdtui.core.files import atomic_write_many
from kdtui.core.registry import RunStore
from kdtui.core.workspace import STOP_FILE, Workspace
from kdtui.runs.executors.launcher import QueueExecutor
from kdtui.runs.executors.slots import QueueError

if TYPE_CHECKING:  # the app imports this module at start; pydantic (~0.1 s) waits for a first Spec
    from kdtui.core.spec import Spec


class ServiceError(ValueError):
    """A run action that cannot be done as asked; the message is one line for the user."""


@dataclass(frozen=True)
class Outcome:
    """What one action did to one run, in a line a person reads."""
    run_id: str
    message: str
    changed: bool = True


class RunService:
    def __init__(self, workspace: Workspace, store: RunStore | None = None):
        self.workspace = workspace
        self.store = store or RunStore(workspace)

    # -- submit and launch ----------------------------------------------------------------------

    def submit(self, points: list[Spec], owner_pid: int | None = None, preset: tuple[str, str] | None = None) -> list[str]:
        """Register resolved, validated specs as queued runs; returns their ids in order.

        Each point gets its folder and spec first, then the whole sweep enters the registry in one
        write. `owner_pid` owns the queued runs until they start (the foreground CLI), so a queued
        run whose owner dies is reconciled to `interrupted`. `preset`: (id, scale) of the preset the
        points come from, kept in each record.
        """
        return self._register(points, owner_pid, preset)

    def submit_detached(self, points: list[Spec], *, retrain_teachers: bool = False, device: str | None = None,
                        slots_per_gpu: int | None = None,
                        preset: tuple[str, str] | None = None) -> tuple[list[str], list[int]]:
        """Register the points straight into the queue's line and start workers for them; returns
        (run ids, worker pids). ServiceError, before anything is registered, for a bad slot setting
        or a device no slot fits.

        Who owns a run between registering and queueing: nobody has to. Under the line's lock the
        line entries are written first, then the records, already `pid = None` (the line's), so no
        worker sees the line in between, and nothing is rewritten afterwards (a 5,000-point sweep
        used to rewrite every record.json just to hand its runs to the line). A process killed
        after the entries but before the records leaves entries for unregistered ids, which the line
        drops, and folders that `kdtui runs reindex` reports; killed after the records, the runs
        wait in the line like those of a killed worker, and the next launch starts workers for them.
        """
        queue = self._queue(retrain_teachers=retrain_teachers, device=device, slots_per_gpu=slots_per_gpu)
        pools = self._pools(queue, [point.device for point in points])
        with queue.queue.locked():
            run_ids = self._register(points, None, preset,
                                     lambda ids: queue.queue.append(queue.line_entries(ids, pools)))
        return run_ids, queue.start_workers()

    def launch(self, run_ids: list[str], *, retrain_teachers: bool = False, device: str | None = None,
               slots_per_gpu: int | None = None) -> list[int]:
        """Start registered queued runs in the background, each when a device slot is free; returns
        worker pids. ServiceError, before anything changes, for a bad slot setting."""
        return self._queue(retrain_teachers=retrain_teachers, device=device,
                           slots_per_gpu=slots_per_gpu).start(run_ids).pids

    def _register(self, points: list[Spec], owner_pid: int | None, preset: tuple[str, str] | None,
                  before_index: Callable[[list[str]], None] | None = None) -> list[str]:
        self.store.create_if_missing()  # a registry that needs `kdtui runs reindex` refuses before any folder is made
        records, folders = [], []
        preset_id, preset_scale = preset or (None, None)
        try:
            specs = []
            for point in points:
                run_id, folder = self.workspace.claim_run_dir()
                folders.append(folder)
                specs.append((folder / "spec.toml", point.to_toml()))
                records.append(lifecycle.new_record(run_id, point, pid=owner_pid, preset=preset_id,
                                                    preset_scale=preset_scale))
            atomic_write_many(specs)  # 5,000 specs: two file-system syncs, not 5,000 fsyncs
            run_ids = [record["id"] for record in records]
            if before_index is not None:
                before_index(run_ids)
            self.store.add_many(records)
        except BaseException:  # a full disk, the registry, Ctrl-C: no folder without a record stays behind
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return run_ids

    def _queue(self, **options) -> QueueExecutor:
        try:
            return QueueExecutor(self.workspace, self.store, **options)
        except QueueError as exc:
            raise ServiceError(str(exc)) from None

    @staticmethod
    def _pools(queue: QueueExecutor, devices: list[str | None]) -> list[list[str]]:
        try:
            return [queue.pools(device) for device in devices]
        except QueueError as exc:
            raise ServiceError(str(exc)) from None

    # -- stop -----------------------------------------------------------------------------------

    def stop(self, record: dict) -> Outcome:
        """Ask a run to stop; a queued run leaves the queue at once."""
        run_id, status = record["id"], record["status"]
        if status == QUEUED:
            lifecycle.stop(self.store, run_id)
            (self.workspace.run_dir(run_id) / STOP_FILE).touch()  # its waiting worker leaves the line at once
            return Outcome(run_id, f"{run_id} removed from the queue (stopped)" + self._cancel_job(record))
        if status == RUNNING and self._job_ended(record):
            lifecycle.interrupt(self.store, run_id)
            return Outcome(run_id, f"{run_id}: its Slurm job {record['slurm_job']} has ended without recording an end: "
                                   f"interrupted (kdtui runs resume {run_id})")
        if status == RUNNING:
            (self.workspace.run_dir(run_id) / STOP_FILE).touch()
            return Outcome(run_id, f"{run_id}: stop requested; it keeps its last checkpoint "
                                   f"(kdtui runs resume {run_id})" + self._cancel_job(record))
        return Outcome(run_id, f"{run_id} is already {status}", changed=False)

    def stop_many(self, records: list[dict]) -> list[Outcome]:
        """`stop` for many runs: the queued ones (a 5,000-point sweep) leave the queue in one
        registry write; the others are asked one by one."""
        queued = [r["id"] for r in records if r["status"] == QUEUED]
        stopped = set(lifecycle.stop_queued(self.store, queued)) if queued else set()
        outcomes = []
        for record in records:
            if record["id"] in stopped:
                (self.workspace.run_dir(record["id"]) / STOP_FILE).touch()  # its waiting worker leaves the line at once
                outcomes.append(Outcome(record["id"], f"{record['id']} removed from the queue (stopped)"
                                        + self._cancel_job(record)))
            elif record["status"] == QUEUED:  # started since it was read: stopped as it is now
                outcomes.append(self.stop(self.store.get(record["id"]) or record))
            else:
                outcomes.append(self.stop(record))
        return outcomes

    @staticmethod
    def _job_ended(record: dict) -> bool:
        """A run on Slurm whose job is over: its process died on a node where nobody could settle it."""
        if record.get("executor") != "slurm":
            return False
        from kdtui.runs.executors.slurm_jobs import job_ended

        return job_ended(record)

    @staticmethod
    def _cancel_job(record: dict) -> str:
        """A run on Slurm: its job is cancelled too (Slurm's SIGTERM stops it like the STOP file);
        what to add to the outcome's line."""
        if record.get("executor") != "slurm" or not record.get("slurm_job"):
            return ""
        from kdtui.runs.executors.slurm_jobs import cancel

        problem = cancel(record)
        return f"; {problem}" if problem else f"; Slurm job {record['slurm_job']} cancelled"

    def release_owned(self, run_ids: list[str]) -> None:
        """Mark the runs this process still owns (queued, or running here) as stopped: resumable.
        Called when a foreground sweep ends early (Ctrl-C, a stopped point)."""
        host = socket.gethostname()
        for run_id in run_ids:
            current = self.store.get(run_id)
            if current is not None and current["status"] in ACTIVE_STATUSES and \
                    current.get("pid") == os.getpid() and current.get("host") == host:
                lifecycle.stop(self.store, run_id)

    # -- notes, tags, names ---------------------------------------------------------------------

    def annotate(self, record: dict, *, note: str | None = None, tags: list[str] | None = None,
                 name: str | None = None) -> Outcome:
        """Set a run's note (empty clears it), change its tags (`+a -b`) or rename it: the record's
        `note`, `tags`, `name`, in record.json and the index by one locked write, whatever the run's
        status. The id, the spec, its hashes and so the group never change. Raises ServiceError."""
        from kdtui.core.annotations import AnnotationError, changed_tags, checked_name, checked_note

        run_id = record["id"]
        try:
            fields: dict = {}
            if note is not None:
                fields["note"] = checked_note(note)
            if name is not None:
                fields["name"] = checked_name(name)
            if tags is not None:
                changed_tags([], tags)  # checked before the lock: a bad tag is one line, nothing written
        except AnnotationError as exc:
            raise ServiceError(str(exc)) from None

        def decide(current: list[dict]) -> dict[str, dict]:
            # Tags change from what the record holds under the lock: two tag commands at once both count.
            return {doc["id"]: {**fields, **({"tags": changed_tags(doc.get("tags") or [], tags)}
                                             if tags is not None else {})} for doc in current}

        if not self.store.update_checked([run_id], decide):
            raise ServiceError(f"run {run_id} is no longer in the registry")
        now = self.store.get(run_id) or {}
        said = [f"note: {now['note']}" if note is not None and now.get("note") else "note cleared" if note is not None
                else "", f"tags: {' '.join(now.get('tags') or []) or '(none)'}" if tags is not None else "",
                f"name: {now.get('name')}" if name is not None else ""]
        return Outcome(run_id, f"{run_id} " + "; ".join(s for s in said if s))

    # -- resume ---------------------------------------------------------------------------------

    def requeue(self, record: dict) -> None:
        """Make a stopped, interrupted or failed run `queued` again, owned by this process until a
        worker (or the foreground loop) starts it; an old stop request is dropped."""
        run_id = record["id"]
        if record["status"] not in RESUMABLE_STATUSES:
            raise ServiceError(f"run {run_id} is {record['status']}; only stopped, interrupted or failed runs resume")
        (self.workspace.run_dir(run_id) / STOP_FILE).unlink(missing_ok=True)
        lifecycle.requeue(self.store, run_id, pid=os.getpid(), host=socket.gethostname())

    def resume_detached(self, records: list[dict]) -> list[int]:
        """Requeue every run and start them in the background; returns worker pids. Every run, the
        slot setting and each run's device are checked first (ServiceError, nothing changed). As in
        `submit_detached`, the runs go into the line first and then become `queued` with no owner
        but the line, under the line's lock."""
        for record in records:
            if record["status"] not in RESUMABLE_STATUSES:
                raise ServiceError(f"run {record['id']} is {record['status']}; only stopped, interrupted or "
                                   "failed runs resume")
        queue = self._queue()
        devices = [(record.get("spec") or {}).get("device") for record in self.store.with_details(records)]
        pools = self._pools(queue, devices)
        run_ids = [record["id"] for record in records]
        with queue.queue.locked():
            for run_id in run_ids:
                (self.workspace.run_dir(run_id) / STOP_FILE).unlink(missing_ok=True)
            queue.queue.append(queue.line_entries(run_ids, pools))
            lifecycle.requeue_many(self.store, run_ids, pid=None, slot=None, gpu=None, worker=None,
                                   host=socket.gethostname())
        return queue.start_workers()

    # -- remove ---------------------------------------------------------------------------------

    def remove(self, records: list[dict]) -> list[Outcome]:
        """Delete runs, record and folder; refuses (before deleting any) if one is still active."""
        active = [r["id"] for r in records if r["status"] in ACTIVE_STATUSES]
        if active:
            raise ServiceError(f"{', '.join(active)} still active; stop first (kdtui runs stop ID)")
        for record in records:
            problem = self._folder_problem(record["id"])
            if problem is not None:
                raise ServiceError(f"{problem}; refusing to delete it (nothing was deleted)")
        outcomes = []
        for record in records:
            # The index first, the folder last: a failed index write leaves the run listed and
            # whole; a kill in between leaves a folder that `kdtui runs reindex` lists again.
            self.store.remove(record["id"])
            folder = self.workspace.run_dir(record["id"])
            try:
                shutil.rmtree(folder)
            except FileNotFoundError:
                pass
            except OSError as exc:
                outcomes.append(Outcome(record["id"], f"deleted {record['id']} from the registry, but not its folder "
                                                      f"{folder}: {exc.strerror or exc}"))
                continue
            outcomes.append(Outcome(record["id"], f"deleted {record['id']}"))
        return outcomes

    def _folder_problem(self, run_id: str) -> str | None:
        """Why a run's folder may not be deleted: a run folder is a real folder inside the
        workspace, never a link to one elsewhere (whatever it points at is not kdtui's to delete)."""
        folder = self.workspace.run_dir(run_id)
        if folder.is_symlink():
            return f"run folder {folder} is a symbolic link, not a folder of this workspace"
        if folder.exists() and not folder.is_dir():
            return f"run folder {folder} is not a folder"
        if folder.exists() and os.path.realpath(folder) != os.path.join(os.path.realpath(self.workspace.root), run_id):
            return f"run folder {folder} lies outside the workspace {self.workspace.root}"
        return None
