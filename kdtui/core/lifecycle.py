"""Every change of a run's status, each by its name. No other module writes a record's `status`
(a test reads the source to hold that).

    new ─► queued ─► taken ─► running ─► done | failed | stopped
              ▲        (a worker's        │
              │         claim; still      ▼ its process gone without a final record
              │         queued)         interrupted   (reconcile)
              └── requeue (resume) ◄── stopped | interrupted | failed

Each function takes what writes the record, `store` (a RunStore, or anything with its
`update(run_id, **fields)`), and returns the record as stored. The fields that go with a status
(when it finished, the error, the metrics) are set here too, so every path that ends a run ends it
the same way. A run that would end `done` with metrics out of their bounds ends `failed` instead,
its error naming the metric and the value (`kdtui.core.record.metric_problem`).

Reconciling is an explicit step (`reconcile`), never a side effect of reading: `kdtui runs list`,
`reindex`, the commands that act on a run's status, the app's refresh and a worker whose child
exited call it.
"""
from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from kdtui.core import eventlog
from kdtui.core.events import (ACTIVE_STATUSES, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, STOPPED, Done, Failed,
                               final_status)
from kdtui.core.procs import pid_alive
from kdtui.core.record import metric_problem

if TYPE_CHECKING:
    from kdtui.core.registry import RunStore
    from kdtui.core.spec import Spec
    from kdtui.core.workspace import Workspace


class RecordWriter(Protocol):
    def update(self, run_id: str, **fields: Any) -> dict: ...


def new_record(run_id: str, spec: Spec, *, pid: int | None = None, preset: str | None = None,
               preset_scale: str | None = None) -> dict:
    """A run's first record: `queued`, owned by `pid` (None: by the queue's line) until it starts.
    `preset` / `preset_scale`: the preset it was launched from, if any (`kdtui report --preset`
    selects by these)."""
    from kdtui.core.spec import spec_hashes  # already loaded: the caller holds a parsed Spec

    exact, group = spec_hashes(spec)
    return {"id": run_id, "name": spec.name, "status": QUEUED, "spec": spec.model_dump(mode="json"),
            "spec_hash": exact, "group_hash": group, "metrics": {}, "teachers": [],
            "device": None, "host": socket.gethostname(), "pid": pid, "created": time.time(),
            "started": None, "finished": None, "error": None, "preset": preset, "preset_scale": preset_scale}


# -- one run ----------------------------------------------------------------------------------------

def take(store: RunStore, run_id: str, *, worker: int, slot: str, gpu: str | None) -> dict | None:
    """queued → taken: a worker claims the run for a slot. The status stays `queued` until the run's
    own process starts it; the worker's pid owns it meanwhile, so a worker killed before the run
    starts leaves a run that reconciles to `interrupted`, not one that waits for nobody. None, and
    nothing written, if the run is no longer queued under the registry's lock (stopped meanwhile):
    the worker then starts no process for it."""
    fields = {"pid": worker, "worker": worker, "slot": slot, "gpu": gpu, "taken": time.time()}
    changed = store.update_checked([run_id], lambda current: {
        record["id"]: fields for record in current if record.get("status") == QUEUED})
    return store.get(run_id) if changed else None


def start(store: RecordWriter, run_id: str, **fields: Any) -> dict:
    """→ running, in this process (its pid and host), from now."""
    return store.update(run_id, status=RUNNING, pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                        error=None, finished=None, **fields)


def done(store: RecordWriter, run_id: str, metrics: dict, *, finished: float | None = None, **fields: Any) -> dict:
    """running → done with its final metrics; → failed instead if a metric is out of its bounds."""
    problem = metric_problem(metrics)
    if problem is not None:
        return fail(store, run_id, problem, finished=finished, **fields)
    return store.update(run_id, status=DONE, metrics=metrics, finished=_now(finished), **fields)


def fail(store: RecordWriter, run_id: str, error: str, *, finished: float | None = None, **fields: Any) -> dict:
    """→ failed, with the one-line error."""
    return store.update(run_id, status=FAILED, error=error, finished=_now(finished), **fields)


def stop(store: RecordWriter, run_id: str, *, finished: float | None = None, **fields: Any) -> dict:
    """→ stopped: on request, or a queued run taken out of the line; resumable."""
    return store.update(run_id, status=STOPPED, finished=_now(finished), **fields)


def stop_queued(store: RunStore, run_ids: list[str]) -> list[str]:
    """queued → stopped for every run of `run_ids` still queued under the registry's lock, in one
    write (5,000 runs of a sweep: one rewrite of the index, not 5,000). Returns the ids stopped; a
    run taken meanwhile is left to its STOP file."""
    now = time.time()
    return store.update_checked(run_ids, lambda current: {
        record["id"]: {"status": STOPPED, "finished": now} for record in current if record.get("status") == QUEUED})


def interrupt(store: RecordWriter, run_id: str, *, finished: float | None = None) -> dict:
    """→ interrupted: its process is gone without a final record; resumable."""
    return store.update(run_id, status=INTERRUPTED, finished=_now(finished))


def end(store: RecordWriter, run_id: str, status: str, *, metrics: dict | None = None, error: str | None = None,
        **fields: Any) -> dict:
    """The final status another process reported (a Ray task's record), by its name."""
    if status == DONE:
        return done(store, run_id, metrics or {}, **fields)
    if status == STOPPED:
        return stop(store, run_id, **fields)
    return fail(store, run_id, error or f"the run ended {status}", **fields)


def requeue(store: RecordWriter, run_id: str, **fields: Any) -> dict:
    """stopped | interrupted | failed → queued (a resume), or a run sent again: its old error goes."""
    return store.update(run_id, status=QUEUED, error=None, **fields)


def requeue_many(store: RunStore, run_ids: list[str], **fields: Any) -> None:
    """`requeue` of many runs in one registry write."""
    store.update_many(run_ids, status=QUEUED, error=None, **fields)


def _now(when: float | None) -> float:
    return time.time() if when is None else when


# -- reconciliation ---------------------------------------------------------------------------------

def reconcile(store: RunStore, workspace: Workspace | None = None) -> list[str]:
    """Settle runs this host left `running`/`queued` whose process is gone (or a zombie):

    - the run's events.jsonl ends with `done` → `done` with that event's metrics (`failed` if they
      are out of bounds); `failed` → `failed` with its error; `stopped` → `stopped` (the process
      died after writing its last event but before updating the record);
    - no final event → `interrupted`, finished now.

    Runs of other hosts are left alone (their pids mean nothing here). The changes are worked out
    again under the registry's lock, so a run that ended meanwhile keeps its own end. Returns the
    ids changed. Raises what a registry write raises (OSError, RegistryBusy).
    """
    workspace = workspace or store.workspace
    stale = list(_stale_changes(store.find(status=ACTIVE_STATUSES), workspace))
    if not stale:
        return []
    return store.update_checked(stale, lambda current: _stale_changes(current, workspace))


def _stale_changes(records: Iterable[dict], workspace: Workspace) -> dict[str, dict]:
    """For each active record of this host whose process is gone: the fields that settle it."""
    host = socket.gethostname()
    changes: dict[str, dict] = {}
    for record in records:
        if record.get("status") not in ACTIVE_STATUSES or record.get("host") != host:
            continue
        run_id = record.get("id")
        pid = record.get("pid")
        if not run_id or not isinstance(pid, int) or pid_alive(pid, record.get("started")):
            continue
        try:
            events_path = workspace.events_path(run_id)
        except ValueError:
            continue
        now = time.time()
        try:
            final = eventlog.read_final(events_path)
        except OSError as exc:  # a log that cannot be read (a FIFO or folder in its place, too large)
            changes[run_id] = {"status": INTERRUPTED, "finished": now, "error": f"its event log cannot be read: {exc}"}
            continue
        if final is None:
            changes[run_id] = {"status": INTERRUPTED, "finished": now}
            continue
        fields: dict[str, Any] = {"status": final_status(final), "finished": final.t if final.t is not None else now}
        if isinstance(final, Done):
            metrics = final.metrics or record.get("metrics") or {}
            problem = metric_problem(metrics)
            fields.update({"metrics": metrics} if problem is None else {"status": FAILED, "error": problem})
        elif isinstance(final, Failed):
            fields["error"] = final.error or record.get("error") or "the run failed"
        changes[run_id] = fields
    return changes

