"""The run registry `<workspace>/kdtui.json`: one TinyDB document per run, many writers.

TinyDB neither locks nor writes atomically (its JSON storage truncates, then rewrites), so a crash
mid-write would lose every record. Here every write goes to a temporary file that is fsynced and
renamed over the old one, and every read-modify-write holds an inter-process file lock while it
re-reads the file. Readers take no lock: a rename replaces the whole file at once.

TinyDB parses the whole file on every read, so the registry holds summaries only; the per-epoch
history is joined in from the run's `events.jsonl` (`record_with_history`).
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from kdtui.core import eventlog
from kdtui.core.events import (ACTIVE_STATUSES, FINAL_EVENT_TYPES, INTERRUPTED, QUEUED, Done, EpochMetrics, Failed,
                               PhaseEnd, PhaseStart, Progress)
from kdtui.core.files import TEMP_SUFFIX, atomic_write, temp_prefix
from kdtui.core.procs import pid_alive
from kdtui.core.workspace import Workspace

SCHEMA_VERSION = 1
TABLE = "_default"  # TinyDB's default table, so `TinyDB(path).all()` sees the runs too
# The record's keys (PRODUCT.md); `history` is not stored here.
RECORD_KEYS = (
    "id", "name", "status", "spec", "spec_hash", "group_hash", "metrics", "teachers", "device",
    "host", "pid", "created", "started", "finished", "error",
)
_DEFAULTS: dict[str, Any] = {
    "name": "", "status": QUEUED, "spec": {}, "spec_hash": None, "group_hash": None,
    "metrics": {}, "teachers": [], "device": None, "host": None, "pid": None,
    "started": None, "finished": None, "error": None,
}
NOT_STORED = frozenset({"history"})
LOCK_TIMEOUT_S = 60.0
_LOCK_INIT = threading.Lock()


class RegistryError(Exception):
    """Base class for registry errors; the message is one line meant for the user."""


class RunNotFound(RegistryError, KeyError):
    def __init__(self, run_id: str, where: Path | None = None):
        self.run_id = run_id
        msg = f"no run matches '{run_id}'" + (f" in {where}" if where else "")
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class AmbiguousRunId(RegistryError, KeyError):
    def __init__(self, prefix: str, matches: list[str]):
        self.prefix = prefix
        self.matches = matches
        shown = ", ".join(matches[:20]) + (f", ... ({len(matches)} in all)" if len(matches) > 20 else "")
        super().__init__(f"run id '{prefix}' is ambiguous; it matches: {shown}")

    def __str__(self) -> str:
        return self.args[0]


class RunExists(RegistryError, ValueError):
    pass


class RegistryCorrupt(RegistryError):
    pass


class RegistryBusy(RegistryError):
    pass


# -- storage --------------------------------------------------------------------------------------

class AtomicJSONStorage(Storage):
    """TinyDB storage that never truncates in place: every write replaces the whole file at once
    (kdtui.core.files).

    `cache_reads=True` keeps the data from the first read (and each write) for the lifetime of the
    instance; RunStore uses it for one short-lived instance per operation, under the lock, so one
    operation parses the file once. Leave it off for a long-lived TinyDB.
    """

    def __init__(self, path: str | Path, create_dirs: bool = True, cache_reads: bool = False,
                 **json_kwargs: Any):
        self.path = Path(path)
        if create_dirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_reads = cache_reads
        self._cache: dict | None = None
        self._json_kwargs = json_kwargs

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self.cache_reads and self._cache is not None:
            return self._cache
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        # Parsing makes ~100 small objects per run; without this, the cyclic GC runs repeatedly in
        # the middle of the parse (and scans the whole heap of a large app) for nothing.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryCorrupt(f"registry {self.path} is not valid JSON ({exc})") from None
        finally:
            if gc_was_enabled:
                gc.enable()
        if not isinstance(data, dict):
            raise RegistryCorrupt(f"registry {self.path} does not hold a JSON object")
        if self.cache_reads:
            self._cache = data
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        try:
            text = json.dumps(data, separators=(",", ":"), allow_nan=False,
                              default=eventlog._default, **self._json_kwargs)
        except ValueError:
            text = eventlog.dumps(data)  # NaN/inf metrics become null: the file stays strict JSON
        atomic_write(self.path, text)
        if self.cache_reads:
            self._cache = data

    def close(self) -> None:
        self._cache = None


# -- the store ------------------------------------------------------------------------------------

def _time_key(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).timestamp()
    return 0.0


def _plain(doc: dict) -> dict:
    return dict(doc)


class RunStore:
    """The registry of one workspace.

    `RunStore(workspace)` or `RunStore(path)` where path is a workspace folder or the registry file
    itself. Writes (`add`, `update`, `remove`) hold `<registry>.lock` across re-read, change and
    atomic write, so concurrent processes never lose each other's records. The first read through an
    instance reconciles stale runs (see `reconcile`); pass `auto_reconcile=False` to skip that.
    """

    def __init__(self, workspace_or_path: Workspace | str | Path | None = None, *,
                 auto_reconcile: bool = True, lock_timeout: float = LOCK_TIMEOUT_S):
        if isinstance(workspace_or_path, Workspace):
            self.workspace = workspace_or_path
            self.path = workspace_or_path.registry_path
        else:
            p = Path(workspace_or_path) if workspace_or_path is not None else None
            if p is not None and p.suffix == ".json" and not p.is_dir():
                p = p.expanduser().absolute()
                p.parent.mkdir(parents=True, exist_ok=True)
                self.workspace = Workspace(p.parent)
                self.path = p
            else:
                self.workspace = Workspace(p)
                self.path = self.workspace.registry_path
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._lock: Any = None  # created on the first write: importing filelock costs ~50 ms
        self.auto_reconcile = auto_reconcile
        self._reconciled = not auto_reconcile

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- plumbing --

    def _db(self, cache_reads: bool) -> TinyDB:
        return TinyDB(self.path, storage=AtomicJSONStorage, cache_reads=cache_reads)

    @contextlib.contextmanager
    def _locked_table(self) -> Iterator[Any]:
        """A fresh TinyDB opened under the lock: sees every committed write, and the lock keeps
        others out until this operation's write is renamed into place."""
        import filelock

        with _LOCK_INIT:
            if self._lock is None:
                # A finite timeout also keeps filelock from refusing a second in-process holder
                # as a "deadlock": two stores (or threads) in one process then take turns.
                self._lock = filelock.FileLock(str(self.lock_path), timeout=self.lock_timeout)
            lock = self._lock
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RegistryBusy(f"registry {self.path} is locked by another process "
                               f"(waited {self.lock_timeout:.0f} s for {self.lock_path})") from None
        try:
            self._remove_stale_temp_files()
            db = self._db(cache_reads=True)
            try:
                yield db.table(TABLE)
            finally:
                db.close()
        finally:
            lock.release()

    def _remove_stale_temp_files(self) -> None:
        # Every writer holds the lock while its temp file exists, so under the lock any temp file
        # left over belongs to a writer that was killed.
        prefix = temp_prefix(self.path)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _read_raw(self) -> list[dict]:
        """All documents, no lock, no reconciliation. Tolerates the file appearing or being
        replaced meanwhile (a rename swaps whole files; a vanished file reads as empty)."""
        for attempt in range(3):
            db = self._db(cache_reads=False)
            try:
                return [_plain(d) for d in db.table(TABLE).all()]
            except RegistryCorrupt:
                # Only a writer that bypasses this module could leave a half file; give it a moment.
                if attempt == 2:
                    raise
                time.sleep(0.05)
            finally:
                db.close()
        return []

    def _read(self) -> list[dict]:
        records = self._read_raw()
        if not self._reconciled:
            records, _ = self._reconcile_records(records)
        return records

    # -- writes --

    @staticmethod
    def _prepare(record: dict) -> dict:
        doc: dict[str, Any] = {}
        for key in RECORD_KEYS:  # contract keys first, in the documented order
            if key in record:
                doc[key] = record[key]
            elif key in _DEFAULTS:
                value = _DEFAULTS[key]
                doc[key] = value.copy() if isinstance(value, (dict, list)) else value
        if doc.get("created") is None:
            doc["created"] = time.time()
        doc.update((k, v) for k, v in record.items() if k not in doc and k not in NOT_STORED)
        doc["schema_version"] = SCHEMA_VERSION
        return doc

    def add(self, record: dict) -> dict:
        """Insert a new run's record (needs 'id'; fails if that id exists). Missing contract keys get
        defaults, `created` defaults to now, `history` is dropped (it lives in the run folder).
        Returns the stored document."""
        return self.add_many([record])[0]

    def add_many(self, records: list[dict]) -> list[dict]:
        """`add` for a whole sweep in one locked write: 5,000 points cost one rewrite of the file,
        not 5,000. Nothing is added if any id is taken."""
        docs = []
        for record in records:
            run_id = record.get("id")
            if not isinstance(run_id, str) or not run_id:
                raise ValueError("a run record needs a non-empty string 'id'")
            docs.append(self._prepare(record))
        if not docs:
            return []
        with self._locked_table() as table:
            taken = {doc.get("id") for doc in table.all()} & {doc["id"] for doc in docs}
            if taken:
                raise RunExists(f"run id {', '.join(sorted(taken))} is already in {self.path}")
            table.insert_multiple(docs)
        return docs

    def update(self, run_id: str, **fields: Any) -> dict:
        """Set fields of one record, atomically with respect to every other writer. Returns the
        updated document; raises RunNotFound."""
        if "id" in fields and fields["id"] != run_id:
            raise ValueError("a run's id cannot be changed")
        fields = {k: v for k, v in fields.items() if k not in NOT_STORED}
        fields["schema_version"] = SCHEMA_VERSION
        with self._locked_table() as table:
            found = table.search(Query().id == run_id)
            if not found:
                raise RunNotFound(run_id, self.path)
            table.update(fields, Query().id == run_id)
            doc = _plain(found[0])
            doc.update(fields)
        return doc

    def remove(self, run_id: str) -> None:
        """Delete one record (not the run's folder); raises RunNotFound."""
        with self._locked_table() as table:
            if not table.remove(Query().id == run_id):
                raise RunNotFound(run_id, self.path)

    # -- reads --

    def get(self, run_id: str) -> dict | None:
        for record in self._read():
            if record.get("id") == run_id:
                return record
        return None

    def resolve(self, prefix: str) -> dict:
        """The one record whose id is `prefix` or starts with it."""
        return self.resolve_all([prefix])[0]

    def resolve_all(self, prefixes: Iterable[str]) -> list[dict]:
        """`resolve` for each prefix, reading the registry once (a 1,000-run export would otherwise
        parse the whole file once per id)."""
        records = self._read()
        by_id = {record.get("id", ""): record for record in records}
        found = []
        for prefix in prefixes:
            prefix = (prefix or "").strip()
            if prefix in by_id and prefix:
                found.append(by_id[prefix])
                continue
            matches = sorted(run_id for run_id in by_id if prefix and run_id.startswith(prefix))
            if not matches:
                raise RunNotFound(prefix, self.path)
            if len(matches) > 1:
                raise AmbiguousRunId(prefix, matches)
            found.append(by_id[matches[0]])
        return found

    def all(self) -> list[dict]:
        """Every record, oldest first (by `created`, then id)."""
        return sorted(self._read(), key=lambda r: (_time_key(r.get("created")), str(r.get("id"))))

    def find(self, status: str | Iterable[str] | None = None, name: str | None = None,
             group: str | None = None) -> list[dict]:
        """Records filtered by status (one or several), name (case-insensitive substring) and group
        (prefix of `group_hash`), oldest first."""
        statuses = {status} if isinstance(status, str) else set(status) if status is not None else None
        needle = name.lower() if name else None
        out = []
        for record in self.all():
            if statuses is not None and record.get("status") not in statuses:
                continue
            if needle is not None and needle not in str(record.get("name") or "").lower():
                continue
            if group and not str(record.get("group_hash") or "").startswith(group):
                continue
            out.append(record)
        return out

    def __len__(self) -> int:
        return len(self._read_raw())

    # -- reconciliation --

    def reconcile(self, workspace: Workspace | None = None) -> list[str]:
        """Settle stale runs now (see the module function `reconcile`); returns the ids changed."""
        _, changed = self._reconcile_records(self._read_raw(), workspace, strict=True)
        return changed

    def _reconcile_records(self, records: list[dict], workspace: Workspace | None = None,
                           strict: bool = False) -> tuple[list[dict], list[str]]:
        """Reconcile; return the records as they now stand and the ids changed. With strict=False
        (the automatic pass on first read) a failure to write (read-only workspace, lock held too
        long) is a warning, and the caller still gets the records reconciled in memory."""
        self._reconciled = True
        workspace = workspace or self.workspace
        changes = _stale_changes(records, workspace)
        if not changes:
            return records, []
        try:
            applied = self._apply_changes(changes, workspace)
        except (OSError, RegistryBusy) as exc:
            if strict:
                raise
            warnings.warn(f"kdtui: could not update stale runs in {self.path}: {exc}", stacklevel=4)
            applied = changes
        records = [{**r, **applied[r["id"]]} if r.get("id") in applied else r for r in records]
        return records, list(applied)

    def _apply_changes(self, changes: dict[str, dict], workspace: Workspace) -> dict[str, dict]:
        with self._locked_table() as table:
            # Re-check under the lock: the run may have finished (or been reconciled) meanwhile.
            current = [d for d in table.all() if d.get("id") in changes]
            applied = _stale_changes(current, workspace)
            if applied:
                def settle(docs: dict) -> None:
                    for doc in docs.values():
                        if doc.get("id") in applied:
                            doc.update(applied[doc["id"]])
                # One read-modify-write for all of them (TinyDB's own update takes one per call).
                table._update_table(settle)
        return applied


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
        final = eventlog.final_event(eventlog.read_all(events_path, types=_FINAL_AND_ACTIVITY))
        now = time.time()
        if final is None:
            changes[run_id] = {"status": INTERRUPTED, "finished": now}
            continue
        when = final.get("t") if isinstance(final.get("t"), (int, float)) else now
        kind = final["type"]
        fields: dict[str, Any] = {"status": kind, "finished": when}
        if kind == Done.type:
            fields["metrics"] = final.get("metrics") or record.get("metrics") or {}
        elif kind == Failed.type:
            fields["error"] = final.get("error") or record.get("error") or "the run failed"
        changes[run_id] = fields
    return changes


# Final types plus the activity that reopens a run after one (a resume); `log` lines do neither.
_FINAL_AND_ACTIVITY = (*FINAL_EVENT_TYPES, PhaseStart.type, PhaseEnd.type, EpochMetrics.type, Progress.type)


def reconcile(store: RunStore, workspace: Workspace | None = None) -> list[str]:
    """Settle runs this host left `running`/`queued` whose process is gone (or a zombie):

    - the run's events.jsonl ends with `done` → status `done` with that event's metrics;
      `failed` → `failed` with its error; `stopped` → `stopped` (the process died after writing
      its last event but before updating the registry);
    - no final event → `interrupted`, finished = now.

    Runs of other hosts are left alone (their pids mean nothing here). Returns the ids changed.
    """
    return store.reconcile(workspace)


def record_with_history(store: RunStore, workspace: Workspace | None, run_id: str) -> dict:
    """The full record PRODUCT.md describes: the registry document plus `history`, the student's
    per-epoch metrics read from the run's events.jsonl. Raises RunNotFound."""
    record = store.get(run_id)
    if record is None:
        raise RunNotFound(run_id, store.path)
    ws = workspace or store.workspace
    events = eventlog.read_all(ws.events_path(run_id), types=("epoch",))
    return {**record, "history": eventlog.history_from_events(events)}
