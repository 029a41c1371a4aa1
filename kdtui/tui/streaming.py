"""The app's two readers of the workspace, run in worker threads (never on the UI thread).

- `RegistryWatcher` notices when `kdtui.json` changed (stat, about once a second) and only then
  rereads it, through `RunStore` like every other client. Before its first read, and whenever a
  run it shows as active has lost its process, it settles stale runs (kdtui.core.lifecycle.reconcile):
  a dead process does not touch the registry, and reading never writes.
- `EventStreamer` tails the `events.jsonl` of each followed run from the byte offset it reached,
  and hands back one compacted batch per poll for all runs together.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from kdtui.core import lifecycle
from kdtui.core.eventlog import EventReader
from kdtui.core.events import Event
from kdtui.core.procs import pid_alive
from kdtui.core.registry import RunStore
from kdtui.tui.state import ACTIVE, compact_events
from kdtui.core.workspace import Workspace

RECONCILE_EVERY_S = 3.0


class RegistryWatcher:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._stamp: tuple | None = None
        self._next_reconcile = 0.0
        self._host = socket.gethostname()
        self.force = threading.Event()   # set by the UI after it changed the registry itself

    def _current_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.workspace.registry_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def poll(self, records: list[dict] | None) -> list[dict] | None:
        """The records if the registry changed since the last poll (or it must be read: first
        call, forced), else None. `records` is the last list returned (for the liveness check)."""
        now = time.monotonic()
        if records is None or now >= self._next_reconcile:
            self._next_reconcile = now + RECONCILE_EVERY_S
            stale = records is None or any(
                r.get("status") in ACTIVE and r.get("host") == self._host and isinstance(r.get("pid"), int)
                and not pid_alive(r["pid"], r.get("started")) for r in records)
            if stale:
                try:
                    lifecycle.reconcile(RunStore(self.workspace))
                except Exception:  # a busy, read-only or damaged registry: try again on the next round
                    pass
        stamp = self._current_stamp()
        forced = self.force.is_set()
        if stamp == self._stamp and records is not None and not forced:
            return None
        self.force.clear()
        result = RunStore(self.workspace).all()
        self._stamp = stamp if stamp == self._current_stamp() else None  # changed meanwhile: read again
        return result


class EventStreamer:
    """Follows a changing set of runs. `want`/`unwant` come from the UI thread; `poll` from the
    streaming thread. The offset reached in each run's file is kept after a run is dropped, so
    following it again continues where it stopped (no event is applied twice)."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._reasons: dict[str, set[str]] = {}
        self._draining: set[str] = set()
        self._readers: dict[str, EventReader] = {}
        self._offsets: dict[str, int] = {}
        self.wake = threading.Event()

    def want(self, run_id: str, reason: str) -> None:
        with self._lock:
            self._reasons.setdefault(run_id, set()).add(reason)
            self._draining.discard(run_id)
        self.wake.set()

    def unwant(self, run_id: str, reason: str) -> None:
        with self._lock:
            reasons = self._reasons.get(run_id)
            if reasons is None:
                return
            reasons.discard(reason)
            if not reasons:
                del self._reasons[run_id]
                self._draining.add(run_id)  # one last read, then let it go
        self.wake.set()

    def forget(self, run_id: str) -> None:
        """The run was deleted: drop everything about it."""
        with self._lock:
            self._reasons.pop(run_id, None)
            self._draining.discard(run_id)
            self._readers.pop(run_id, None)
            self._offsets.pop(run_id, None)

    def followed(self) -> set[str]:
        with self._lock:
            return set(self._reasons)

    def poll(self) -> dict[str, list[Event]]:
        with self._lock:
            wanted = list(self._reasons)
            draining = list(self._draining)
            self._draining.clear()
        batch: dict[str, list[Event]] = {}
        for run_id in wanted + draining:
            reader = self._readers.get(run_id)
            if reader is None:
                try:
                    path = self.workspace.events_path(run_id)
                except ValueError:
                    continue
                reader = EventReader(path, self._offsets.get(run_id, 0))
                self._readers[run_id] = reader
            try:
                events = reader.read_new()
            except OSError:
                events = []
            self._offsets[run_id] = reader.offset
            if events:
                batch[run_id] = compact_events(events)
        with self._lock:
            for run_id in draining:
                if run_id not in self._reasons:
                    self._readers.pop(run_id, None)
        return batch
