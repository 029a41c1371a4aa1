"""The run registry: an index of the workspace's run folders, with many writers.

The run folders are the truth. Each holds its own `record.json` (the whole record, every field),
rewritten before the index whenever the record changes, so a lost or damaged index is rebuilt
from the folders (`RunStore.reindex`, the command `kdtui runs reindex`). The index is what lets
a command or the app list 10,000 runs without opening 10,000 files:

    <workspace>/kdtui.json            the root: TinyDB table `meta`, one document: layout, shard
                                      count and a generation that every write bumps (the app
                                      watches this one file for changes)
    <workspace>/kdtui.index/<xx>.json a shard: TinyDB table `runs`, one document (a row) per run

Every file is a stock TinyDB database in its default layout: `TinyDB(path).table("runs").all()` or
`.search(Query()...)` reads a shard as it is. An index of layout 2 (shards of rows by run id) is
read as it is and rewritten in this layout by the first write or `kdtui runs reindex`.

A row is the record less its details (`DETAIL_KEYS`: the resolved spec, the teacher list and the environment) and
with only the final metrics that lists show (`LISTED_METRICS`). The rest is what views of single
runs need, and it was two thirds of a record's bytes and most of its parse time (a float is slow to
parse): listing 10,000 runs parses ~0.5 kB a run. `get`, `resolve` and `with_details` join it back
in from record.json.

A run's shard is a hash of its id, so an update parses and rewrites one 64th of the index, not
all of it. TinyDB neither locks nor writes atomically, so every write holds `kdtui.json.lock`
across re-read, change and write: the shards it touches are changed through TinyDB's public API
over an in-memory storage, then replaced whole (kdtui.core.files). Readers take no lock (a rename
swaps whole files), parse shards with plain json and keep each for as long as its file is
unchanged, so the app's next read after an update parses one shard.

The per-epoch history is not in the record; it is joined in from the run's `events.jsonl`
(`record_with_history`).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from kdtui.core import eventlog
from kdtui.core.files import TEMP_SUFFIX, atomic_write, atomic_write_many, temp_prefix
from kdtui.core.record import CORE_KEYS, DEFAULTS, FIELDS, SCHEMA_VERSION, default, fields_problem, record_problem
from kdtui.core.workspace import Workspace, is_run_id

LAYOUT = 3              # of the index (1: every record in kdtui.json itself; 2: shards of rows by run id)
READABLE_LAYOUTS = (2, LAYOUT)  # layout 2 reads as it is; the first write rewrites it in this one
SHARDS = 64             # 10,000 runs: ~160 a shard, ~0.4 MB
INDEX_DIR = "kdtui.index"
RUNS_TABLE = "runs"     # a shard's TinyDB table: one document per run, its row
META_TABLE = "meta"     # the root's TinyDB table: one document, the layout, shard count and generation
RECORD_NAME = "record.json"
REINDEX_HINT = "run `kdtui runs reindex`"
# A new record's fields, first in record.json (every field: kdtui.core.record); `history` is not
# stored here.
RECORD_KEYS = CORE_KEYS
NOT_STORED = frozenset({"history"})
# Kept in the run folder's record.json only, not in the index's rows (see the module docstring).
# Rows written before details left the index still hold them: harmless, since whole records take
# their details from record.json, and `kdtui runs reindex` slims them.
DETAIL_KEYS = ("spec", "teachers", "environment")
# The final metrics a row keeps: what `kdtui runs list` and the app's runs table show and sort by,
# and the teacher's accuracy that the live view draws as a reference line.
LISTED_METRICS = ("epoch", "train_agreement", "test_agreement", "test_acc", "teacher_test_acc")
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


class RegistryNeedsReindex(RegistryError):
    """The index is missing, empty or damaged while run folders exist: `kdtui runs reindex`."""


class RegistryBusy(RegistryError):
    pass


# -- storage: stock TinyDB files ------------------------------------------------------------------

def _parse(raw: bytes) -> Any:
    return json.loads(raw)


def _stamp(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _root_tables(shards: int, generation: int, written: Iterable[str]) -> dict:
    """The root file's content: TinyDB table `meta`, one document. `written`: the shards that exist
    (a shard is written before the root, so one listed here and missing was lost)."""
    return {META_TABLE: {"1": {"kdtui_registry": LAYOUT, "shards": shards, "generation": generation,
                               "index": INDEX_DIR, "written": sorted(written)}}}


def _lost_shard(path: Path) -> RegistryNeedsReindex:
    return RegistryNeedsReindex(f"registry shard {path} is missing but run folders exist: {REINDEX_HINT}")


def _root_meta(root: Any) -> dict | None:
    """What the root file says of the index: the one document of its `meta` table, or (layout 2)
    the file's top level. None if it is neither."""
    if isinstance(root, dict) and isinstance(root.get(META_TABLE), dict):
        docs = list(root[META_TABLE].values())
        return docs[0] if len(docs) == 1 and isinstance(docs[0], dict) else None
    return root if isinstance(root, dict) and "kdtui_registry" in root else None


def _shard_tables(data: Any, path: Path) -> dict:
    """A parsed shard file as TinyDB tables, `{"runs": {doc id: row}}`. A layout-2 shard (rows by
    run id, what kdtui wrote before its files were stock TinyDB) becomes one, numbered in file
    order: told apart by its shape, so a reader that meets a shard mid-migration reads it right."""
    if isinstance(data, dict) and any(isinstance(row, dict) and row.get("id") == key for key, row in data.items()):
        data = {RUNS_TABLE: {str(n): row for n, row in enumerate(data.values(), 1)}}
    # A stock TinyDB file with no table yet is `{}`; any other dict without the table (`{"x": 5}`)
    # is not a shard.
    runs = data.get(RUNS_TABLE, {} if data == {} else None) if isinstance(data, dict) else None
    if not isinstance(runs, dict) or not all(isinstance(row, dict) for row in runs.values()):
        raise RegistryNeedsReindex(f"registry shard {path} is damaged: {REINDEX_HINT}")
    return data


def _read_shard(path: Path) -> tuple[tuple | None, dict]:
    """(the file's stamp, its TinyDB tables) read from disk; a missing shard is an empty one."""
    try:
        with open(path, "rb") as f:
            stamp = _stamp(os.fstat(f.fileno()))
            raw = f.read()
    except FileNotFoundError:
        return None, {RUNS_TABLE: {}}
    try:
        data = _parse(raw)
    except ValueError:
        data = None
    return stamp, _shard_tables(data, path)


# shard file -> (stamp, rows by run id). Only lock-free readers use it: under the lock a shard is
# always read from disk, so a stamp that happens to repeat can never lose a write.
_PARSED: dict[str, tuple[tuple, dict]] = {}
_PARSED_LOCK = threading.Lock()


def index_row(record: dict) -> dict:
    """What the index keeps of a record: its known fields (kdtui.core.record.FIELDS; a field this
    version does not know stays in record.json) but its details, and the listed metrics."""
    row = {k: v for k, v in record.items() if k in FIELDS and k not in DETAIL_KEYS}
    if isinstance(row.get("metrics"), dict):
        row["metrics"] = {k: row["metrics"][k] for k in LISTED_METRICS if k in row["metrics"]}
    return row


def shard_of(run_id: str, shards: int = SHARDS) -> str:
    """The name of the shard (a TinyDB table) that holds `run_id`."""
    return f"{zlib.crc32(run_id.encode('utf-8')) % shards:02x}"


# -- the store ------------------------------------------------------------------------------------

def _time_key(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).timestamp()
    return 0.0


@dataclass
class ReindexResult:
    """What `RunStore.reindex` found in the run folders."""
    registry: Path
    records: int = 0                                          # indexed now
    migrated: list[str] = field(default_factory=list)         # records taken from a layout-1 kdtui.json
    without_record: list[str] = field(default_factory=list)   # run folders with no record.json
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)

    def describe(self) -> str:
        def some(ids: list[str]) -> str:
            return ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")

        text = f"rebuilt {self.registry} from {self.records} run folder{'s' * (self.records != 1)}"
        if self.migrated:
            text += f" ({len(self.migrated)} of them from the old registry, now also in their folders)"
        text += "."
        if self.without_record:
            n = len(self.without_record)
            text += (f" {n} run folder{'s have' if n != 1 else ' has'} no {RECORD_NAME} and "
                     f"{'are' if n != 1 else 'is'} not listed ({some(self.without_record)}): "
                     "delete them, or run their spec.toml again.")
        if self.unreadable:
            n = len(self.unreadable)
            text += (f" {n} {RECORD_NAME} file{'s' * (n != 1)} could not be read and "
                     f"{'are' if n != 1 else 'is'} not listed: "
                     + "; ".join(f"{folder}: {why}" for folder, why in self.unreadable[:5])
                     + (f"; ... ({n} in all)" if n > 5 else "") + ".")
        return text


class _Snapshot:
    """The index as a lock-free reader sees it (a rename swaps whole files): each shard's rows by
    run id, parsed with plain json (TinyDB would wrap every row in a Document first) and kept for as
    long as the file is unchanged, so the app's next read after an update parses one shard. A row
    of the wrong shape is not handed on (its folder then reads as not in the registry, and
    `kdtui runs reindex` names its record)."""

    def __init__(self, folder: Path, shards: int, written: frozenset = frozenset(),
                 folders_exist: Callable[[], bool] = lambda: False):
        self.folder = folder
        self.shards = shards
        self.names = [f"{k:02x}" for k in range(shards)]
        self.written = written              # shards the root says exist: one missing was lost
        self.folders_exist = folders_exist

    def load(self, name: str) -> dict[str, dict]:
        path = self.folder / f"{name}.json"
        try:
            stamp = _stamp(os.stat(path))
        except FileNotFoundError:
            if name in self.written and self.folders_exist():
                raise _lost_shard(path) from None
            return {}
        with _PARSED_LOCK:
            hit = _PARSED.get(str(path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        stamp, tables = _read_shard(path)
        # Rows of the wrong shape (kdtui.core.record) are left out once, here, not on every read.
        rows = {row["id"]: row for row in tables.get(RUNS_TABLE, {}).values() if record_problem(row) is None}
        if stamp is not None:
            with _PARSED_LOCK:
                _PARSED[str(path)] = (stamp, rows)
        return rows

    def get(self, run_id: str) -> dict | None:
        row = self.load(shard_of(run_id, self.shards)).get(run_id)
        return dict(row) if row is not None else None

    def all(self, keep: Callable[[dict], bool] | None = None) -> list[dict]:
        """Copies of the rows (of those `keep` accepts: the rest are not copied)."""
        return [dict(row) for name in self.names for row in self.load(name).values() if keep is None or keep(row)]


class _MemoryStorage(Storage):
    """TinyDB storage for one locked operation: a shard's tables, read once; TinyDB's writes are
    kept here until the operation commits them (kdtui's own lock and atomic replace)."""

    def __init__(self, tables: dict):
        self.tables = tables
        self.changed = False

    def read(self) -> dict:
        return self.tables

    def write(self, data: dict) -> None:
        self.tables = data
        self.changed = True


class _Index:
    """The index as one locked operation sees it: each shard it touches read fresh from disk and
    changed through stock TinyDB's public API, then `commit` writes the shards that changed, in
    parallel, each atomically."""

    def __init__(self, folder: Path, shards: int, written: frozenset = frozenset(),
                 folders_exist: Callable[[], bool] = lambda: False):
        self.folder = folder
        self.shards = shards
        self.names = [f"{k:02x}" for k in range(shards)]
        self.written = written  # as in _Snapshot: a write must not recreate a lost shard with its new rows only
        self.folders_exist = folders_exist
        self._dbs: dict[str, TinyDB] = {}
        self._doc_ids: dict[str, dict[str, int]] = {}  # shard -> run id -> its document's id

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def _db(self, name: str, empty: bool = False) -> TinyDB:
        if name not in self._dbs:
            if not empty and name in self.written and not self._path(name).exists() and self.folders_exist():
                raise _lost_shard(self._path(name))
            tables = {RUNS_TABLE: {}} if empty else _read_shard(self._path(name))[1]
            self._dbs[name] = TinyDB(storage=_MemoryStorage, tables=tables)
        return self._dbs[name]

    def _runs(self, name: str) -> Table:
        return self._db(name).table(RUNS_TABLE)

    def _ids(self, name: str) -> dict[str, int]:
        if name not in self._doc_ids:
            self._doc_ids[name] = {doc["id"]: doc.doc_id for doc in self._runs(name) if isinstance(doc.get("id"), str)}
        return self._doc_ids[name]

    def get(self, run_id: str) -> dict | None:
        name = shard_of(run_id, self.shards)
        doc_id = self._ids(name).get(run_id)
        return dict(self._runs(name).get(doc_id=doc_id)) if doc_id is not None else None

    def put(self, docs: Iterable[dict]) -> None:
        """Insert or replace whole rows: per shard touched, one update and one insert."""
        by_shard: dict[str, dict[str, dict]] = {}
        for doc in docs:
            by_shard.setdefault(shard_of(doc["id"], self.shards), {})[doc["id"]] = index_row(doc)
        for name, rows in by_shard.items():
            table, ids = self._runs(name), self._ids(name)

            def replace(row: dict, rows: dict = rows) -> None:
                new = rows[row["id"]]
                row.clear()
                row.update(new)

            known = [ids[run_id] for run_id in rows if run_id in ids]
            if known:
                table.update(replace, doc_ids=known)
            new_ids = [run_id for run_id in rows if run_id not in ids]
            if new_ids:
                ids.update(zip(new_ids, table.insert_multiple([rows[run_id] for run_id in new_ids])))

    def remove(self, run_id: str) -> bool:
        name = shard_of(run_id, self.shards)
        doc_id = self._ids(name).pop(run_id, None)
        if doc_id is None:
            return False
        self._runs(name).remove(doc_ids=[doc_id])
        return True

    def start_empty(self) -> None:
        """Every shard empty, to be written whole (a reindex)."""
        self._dbs.clear()
        self._doc_ids.clear()
        for name in self.names:
            self._db(name, empty=True).storage.changed = True

    def rewrite_all(self) -> None:
        """Have `commit` write every shard, each in this layout (the first write after an upgrade)."""
        for name in self.names:
            self._db(name).storage.changed = True

    @property
    def changed(self) -> bool:
        return any(db.storage.changed for db in self._dbs.values())

    def commit(self) -> list[str]:
        """Write the shards that changed; returns their names."""
        staged = sorted(name for name, db in self._dbs.items() if db.storage.changed)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_many([(self._path(name), eventlog.dumps(self._dbs[name].storage.tables))
                               for name in staged])
        finally:
            with _PARSED_LOCK:  # the next read parses what is on disk (NaN there is null)
                for name in staged:
                    _PARSED.pop(str(self._path(name)), None)
        for name in staged:
            self._dbs[name].storage.changed = False
        return staged


class RunStore:
    """The registry of one workspace.

    `RunStore(workspace)` or `RunStore(path)` where path is a workspace folder or the registry file
    itself. Writes hold `<registry>.lock` across re-read, change and atomic write, so concurrent
    processes never lose each other's records; each write updates the runs' `record.json` first.
    Reads never write: settling runs whose process died is the explicit step
    `kdtui.core.lifecycle.reconcile`. Every record read is checked against the run model
    (`kdtui.core.record`); one of the wrong shape is left out (a row) or not used (a record.json),
    never handed on to break a list or a view.

    Reads of one run (`get`, `resolve`, `resolve_all`) return whole records. Reads of many (`all`,
    `find`) return index rows, which lack `DETAIL_KEYS` (spec, teachers, environment) and hold only the
    `LISTED_METRICS`, unless asked for `details=True`; `with_details` completes rows already read. Rows share nested values (metrics)
    with a per-process cache: treat them as read-only, or copy before changing a nested value.
    """

    def __init__(self, workspace_or_path: Workspace | str | Path | None = None, *,
                 lock_timeout: float = LOCK_TIMEOUT_S):
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
        self.index_dir = self.path.parent / INDEX_DIR
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._lock: Any = None  # created on the first write: importing filelock costs ~50 ms

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- the root file and the run folders --

    def run_folders(self) -> list[str]:
        """The names of the workspace's run folders (named like a run id), sorted: one scandir."""
        try:
            entries = list(os.scandir(self.workspace.root))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if is_run_id(e.name) and e.is_dir(follow_symlinks=False))

    def check(self) -> None:
        """Raise RegistryNeedsReindex (or RegistryCorrupt) now if reads and writes would; cheap:
        the root file and, only if it is missing or damaged, one scandir."""
        self._read_root()

    def create_if_missing(self) -> None:
        """Check as `check` does, and write an empty registry where there is none. Call it before
        claiming run folders: in a new workspace, two launches at once would otherwise each see
        the other's first folder beside a missing registry, which reads as a lost registry."""
        with self._lock_held():
            if self._read_root() is None:
                self._write_root(SHARDS, 0, ())

    def unregistered_run_folders(self, records: list[dict] | None = None) -> list[str]:
        """Run folders whose run is not in the index (pass the records already read to save a
        read). Commands say: "3 run folders are not in the registry: run `kdtui runs reindex`"."""
        known = {r.get("id") for r in records} if records is not None else self._read_ids()
        return [name for name in self.run_folders() if name not in known]

    def _read_root(self, creating: Iterable[str] = ()) -> tuple[int, int, int, frozenset] | None:
        """(shard count, generation, layout, the shards written so far), or None for a workspace
        with no registry and no runs. `creating`: the runs an add is for, whose folders already
        exist (claimed first)."""
        try:
            raw = self.path.read_bytes()
            problem = "is empty" if not raw.strip() else None
        except FileNotFoundError:
            raw, problem = b"", "is missing"
        except IsADirectoryError:
            raw, problem = b"", "is a folder"
        old_layout = False
        if problem is None:
            try:
                root = _parse(raw)
            except ValueError:
                root, problem = None, "is not valid JSON"
            meta = _root_meta(root)
            if meta is not None and meta.get("kdtui_registry") in READABLE_LAYOUTS:
                shards, generation = meta.get("shards"), meta.get("generation", 0)
                if isinstance(shards, int) and 0 < shards <= 4096 and isinstance(generation, int):
                    return shards, generation, meta["kdtui_registry"], self._written(meta, shards, generation)
            old_layout = _layout1_records(root) is not None
            if old_layout and not _layout1_records(root):
                problem = "is empty"  # an old registry with no runs: nothing to carry over
            elif problem is None:
                problem = "is in an older layout" if old_layout else "is not a kdtui registry"
        folders = [name for name in self.run_folders() if name not in set(creating)]
        if problem in ("is missing", "is empty") and not folders:
            return None
        if folders:
            n = len(folders)
            raise RegistryNeedsReindex(f"registry {self.path} {problem} but {n} run folder{'s' * (n != 1)} "
                                       f"exist{'s' * (n == 1)}: {REINDEX_HINT}")
        if old_layout:
            raise RegistryNeedsReindex(f"registry {self.path} {problem}: {REINDEX_HINT}")
        raise RegistryCorrupt(f"registry {self.path} {problem}")

    def _written(self, meta: dict, shards: int, generation: int) -> frozenset:
        """The shards the root says were written. A root from before it said so: none, unless the
        whole index folder is gone after a write (a write makes the folder), then every shard."""
        written = meta.get("written")
        if isinstance(written, list):
            return frozenset(name for name in written if isinstance(name, str))
        if generation > 0 and not self.index_dir.is_dir():
            return frozenset(f"{k:02x}" for k in range(shards))
        return frozenset()

    def _folders_exist(self, creating: Iterable[str] = ()) -> Callable[[], bool]:
        """Whether run folders (other than those being created) exist: asked only when a shard
        the root lists is missing, so a lost shard with runs beside it is named, never read as empty."""
        return lambda: bool(set(self.run_folders()) - set(creating))

    def _write_root(self, shards: int, generation: int, written: Iterable[str]) -> None:
        atomic_write(self.path, json.dumps(_root_tables(shards, generation, written)) + "\n")

    # -- locking --

    @contextlib.contextmanager
    def _lock_held(self) -> Iterator[None]:
        import filelock

        with _LOCK_INIT:
            if self._lock is None:
                # A finite timeout also keeps filelock from refusing a second in-process holder
                # as a "deadlock": two stores (or threads) in one process then take turns.
                self._lock = filelock.FileLock(str(self.lock_path), timeout=self.lock_timeout)
            lock = self._lock
        self._check_lockable()
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RegistryBusy(f"registry {self.path} is locked by another process "
                               f"(waited {self.lock_timeout:.0f} s for {self.lock_path})") from None
        try:
            self._remove_stale_temp_files()
            yield
        finally:
            lock.release()

    def _check_lockable(self) -> None:
        """OSError now, naming the lock file, if it cannot be made or opened (a read-only or special
        folder such as /proc): filelock would wait out its timeout, then blame another process."""
        try:
            os.close(os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666))
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror or exc} (the registry's lock cannot be made there)",
                          str(self.lock_path)) from None

    @contextlib.contextmanager
    def _locked_index(self, creating: Iterable[str] = ()) -> Iterator[_Index]:
        """The index read fresh under the lock; what the operation changed is committed (the
        shards, then the root) when it leaves without an error."""
        with self._lock_held(), self._index_under_lock(creating) as index:
            yield index

    @contextlib.contextmanager
    def _index_under_lock(self, creating: Iterable[str] = ()) -> Iterator[_Index]:
        shards, generation, layout, written = self._read_root(creating) or (SHARDS, 0, LAYOUT, frozenset())
        index = _Index(self.index_dir, shards, written, self._folders_exist(creating))
        yield index
        if index.changed:
            if layout != LAYOUT:  # the first write after an upgrade: every shard in this layout
                index.rewrite_all()
            staged = index.commit()
            self._write_root(shards, generation + 1, written | set(staged))

    def _remove_stale_temp_files(self) -> None:
        # Every writer holds the lock while its temp files exist, so under the lock any temp file
        # left over belongs to a writer that was killed.
        for folder, prefix in ((self.path.parent, temp_prefix(self.path)), (self.index_dir, ".")):
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    # -- reads --

    def _read(self, keep: Callable[[dict], bool] | None = None) -> list[dict]:
        """Every row of the run model's shape (that `keep` accepts), no lock."""
        root = self._read_root()
        if root is None:
            return []
        return _Snapshot(self.index_dir, root[0], root[3], self._folders_exist()).all(keep)

    def _read_ids(self) -> set[str]:
        """Every run id in the index, no lock, no record copied."""
        root = self._read_root()
        if root is None:
            return set()
        index = _Snapshot(self.index_dir, root[0], root[3], self._folders_exist())
        return {run_id for name in index.names for run_id in index.load(name)}

    # -- writes --

    @staticmethod
    def _prepare(record: dict) -> dict:
        run_id = record.get("id")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("a run record needs a non-empty string 'id'")
        doc: dict[str, Any] = {}
        for key in RECORD_KEYS:  # contract keys first, in the documented order
            if key in record:
                doc[key] = record[key]
            elif key in DEFAULTS:
                doc[key] = default(key)
        if doc.get("created") is None:
            doc["created"] = time.time()
        doc.update((k, v) for k, v in record.items() if k not in doc and k not in NOT_STORED)
        doc["schema_version"] = SCHEMA_VERSION
        problem = fields_problem(doc)
        if problem is not None:  # a writer's bug: a record of the wrong shape is never stored
            raise ValueError(f"run record {run_id}: {problem}")
        return doc

    def _mirror(self, docs: list[dict]) -> None:
        """Write each record into its run folder (made if missing): the folder is the truth, so it
        is written before the index."""
        items = []
        for doc in docs:
            folder = self.workspace.run_dir(doc["id"])
            folder.mkdir(parents=True, exist_ok=True)
            items.append((folder / RECORD_NAME, eventlog.dumps(doc) + "\n"))
        atomic_write_many(items)

    def add(self, record: dict) -> dict:
        """Insert a new run's record (needs 'id'; fails if that id exists). Missing contract keys get
        defaults, `created` defaults to now, `history` is dropped (it lives in the run folder).
        Returns the stored document."""
        return self.add_many([record])[0]

    def add_many(self, records: list[dict]) -> list[dict]:
        """`add` for a whole sweep in one locked write: 5,000 points cost one write of each shard,
        not 5,000 rewrites of the index. Nothing is added if any id is taken."""
        docs = [self._prepare(record) for record in records]
        if not docs:
            return []
        ids = [doc["id"] for doc in docs]
        with self._locked_index(creating=ids) as index:
            seen: set[str] = set()
            repeated = {run_id for run_id in ids if run_id in seen or seen.add(run_id)}
            taken = sorted(repeated | {run_id for run_id in seen if index.get(run_id) is not None})
            if taken:
                raise RunExists(f"run id {', '.join(taken)} is already in {self.path}")
            self._mirror(docs)
            index.put(docs)
        return docs

    def put(self, record: dict) -> dict:
        """Insert or replace one whole record (one locked write). For a run whose record vanished
        while it ran: its folder gets the record even if the index then refuses (a missing index
        with other run folders raises RegistryNeedsReindex, and reindex finds this record too)."""
        doc = self._prepare(record)
        with self._lock_held():
            self._mirror([doc])
            with self._index_under_lock(creating=[doc["id"]]) as index:
                index.put([doc])
        return doc

    def update(self, run_id: str, **fields: Any) -> dict:
        """Set fields of one record, atomically with respect to every other writer. Returns the
        updated document; raises RunNotFound."""
        return self._update([run_id], fields, missing_ok=False)[0]

    def update_many(self, run_ids: list[str], **fields: Any) -> None:
        """Set the same fields on many records in one locked write (a 5,000-point launch hands
        its runs to the queue in one rewrite, not 5,000). Ids not in the registry, and records whose
        fields already have these values, are left alone (no record.json is rewritten for them)."""
        self._update(list(dict.fromkeys(run_ids)), fields, missing_ok=True)

    def _update(self, run_ids: list[str], fields: dict, missing_ok: bool) -> list[dict]:
        if "id" in fields and any(fields["id"] != run_id for run_id in run_ids):
            raise ValueError("a run's id cannot be changed")
        fields = {k: v for k, v in fields.items() if k not in NOT_STORED}
        fields["schema_version"] = SCHEMA_VERSION
        problem = fields_problem(fields)
        if problem is not None:  # a writer's bug: a record of the wrong shape is never stored
            raise ValueError(f"run record update: {problem}")
        if not run_ids:
            return []
        with self._locked_index() as index:
            docs = []
            for run_id in run_ids:
                current = index.get(run_id)
                if current is None:
                    if missing_ok:
                        continue
                    raise RunNotFound(run_id, self.path)
                if missing_ok and all(k in current and current[k] == v for k, v in fields.items()):
                    continue  # update_many: already so; rewriting its record.json would change nothing
                docs.append({**self._whole(current), **fields})
            if docs:
                self._mirror(docs)
                index.put(docs)
        return docs

    def remove(self, run_id: str) -> None:
        """Take one run out of the index; raises RunNotFound. Its folder (record.json included) is
        left for the caller to delete afterwards: a failed index write then leaves the run listed
        and whole, and a folder left behind by a kill is found again by `kdtui runs reindex`."""
        with self._locked_index() as index:
            if index.get(run_id) is None:
                raise RunNotFound(run_id, self.path)
            index.remove(run_id)

    def reindex(self) -> ReindexResult:
        """Rebuild the index from the run folders' record.json, every field of every record, in
        one locked write. Folders without a record are reported; a layout-1 kdtui.json (every
        record in one file) is carried over for the folders that have no record.json yet."""
        result = ReindexResult(self.path)
        with self._lock_held():
            try:
                old = _layout1_records(_parse(self.path.read_bytes())) or {}
            except (OSError, ValueError):
                old = {}
            found: dict[str, dict] = {}
            result.unreadable.extend((name, "a symbolic link, not a run folder (a run folder must be a real folder "
                                            "inside the workspace)") for name in self.linked_run_folders())
            for name in self._record_folders():
                try:
                    raw = (self.workspace.root / name / RECORD_NAME).read_bytes()
                except FileNotFoundError:
                    if name in old and record_problem(old[name]) is not None:
                        result.unreadable.append((name, f"its record in the old registry {record_problem(old[name])}"))
                    elif name in old:
                        found[name] = self._prepare(old[name])
                        result.migrated.append(name)
                    else:
                        result.without_record.append(name)
                    continue
                except OSError as exc:
                    result.unreadable.append((name, exc.strerror or str(exc)))
                    continue
                try:
                    doc = _parse(raw)
                except ValueError:
                    result.unreadable.append((name, "not valid JSON"))
                    continue
                problem = record_problem(doc)
                if problem is not None:
                    result.unreadable.append((name, f"not a run record: it {problem}"))
                    continue
                if doc["id"] != name:
                    result.unreadable.append((name, "not this folder's record (its id differs)"))
                    continue
                found[name] = doc
            self._mirror([found[name] for name in result.migrated])
            self._rewrite_index(found)
        result.records = len(found)
        return result

    def _record_folders(self) -> list[str]:
        """Folders that may hold a run: named like a run id, or holding a record.json."""
        names = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.workspace.root):
                if entry.is_dir(follow_symlinks=False) and (is_run_id(entry.name) or os.path.exists(
                        os.path.join(entry.path, RECORD_NAME))):
                    names.append(entry.name)
        return sorted(names)

    def linked_run_folders(self) -> list[str]:
        """Names like a run id that are symbolic links: never a run folder (what they point at may
        lie outside the workspace), so they are neither indexed nor deleted."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(e.name for e in os.scandir(self.workspace.root) if is_run_id(e.name) and e.is_symlink())
        return []

    def _rewrite_index(self, records: dict[str, dict]) -> None:
        try:
            generation = (self._read_root() or (0, 0, LAYOUT, frozenset()))[1]
        except RegistryError:
            generation = 0
        index = _Index(self.index_dir, SHARDS)
        index.start_empty()
        index.put(records.values())
        index.commit()
        with contextlib.suppress(FileNotFoundError):  # shards of a larger shard count, if any
            for entry in os.scandir(self.index_dir):
                if entry.name.endswith(".json") and entry.name[:-5] not in index.names:
                    os.unlink(entry.path)
        self._write_root(SHARDS, generation + 1, index.names)

    # -- reads --

    def get(self, run_id: str) -> dict | None:
        """The whole record of one run (its row and, from record.json, its details), or None."""
        root = self._read_root()
        row = _Snapshot(self.index_dir, root[0], root[3], self._folders_exist()).get(run_id) if root else None
        return self._whole(row) if row is not None else None

    def with_details(self, rows: Iterable[dict]) -> list[dict]:
        """The whole records of index rows (`all`, `find`): one record.json read per row."""
        return [self._whole(row) for row in rows]

    def _whole(self, row: dict) -> dict:
        """The row plus the details and the metrics its run folder's record.json holds. Only these
        are taken from the file: the rest is what the index lists (the file is written first, so it
        is never older). A folder whose record.json is gone gives the details' defaults and the
        listed metrics. Fields the run model does not know (a newer kdtui's) come from the file too:
        the index leaves them out, and a write of the whole record must keep them."""
        doc = self._record_file(row["id"]) or {}
        details = {k: doc[k] if k in doc else default(k) for k in DETAIL_KEYS if k in doc or k in DEFAULTS}
        if "metrics" in doc:
            details["metrics"] = doc["metrics"]
        whole = {k: details[k] if k in details else row[k] for k in RECORD_KEYS if k in row or k in details}
        whole.update((k, v) for k, v in row.items() if k not in whole)
        whole.update((k, v) for k, v in details.items() if k not in whole)
        whole.update((k, v) for k, v in doc.items() if k not in whole and k not in FIELDS)
        return whole

    def _record_file(self, run_id: str) -> dict | None:
        """The run folder's record.json if it is this run's record, of the run model's shape, else
        None."""
        try:
            doc = _parse((self.workspace.run_dir(run_id) / RECORD_NAME).read_bytes())
        except (OSError, ValueError):
            return None
        return doc if record_problem(doc) is None and doc["id"] == run_id else None

    def resolve(self, prefix: str) -> dict:
        """The one record whose id is `prefix` or starts with it, or whose random suffix starts
        with it (`b09d` for `261129-185038-b09d`: ids start with a timestamp, the suffix is what
        people read and type)."""
        return self.resolve_all([prefix])[0]

    def resolve_all(self, prefixes: Iterable[str]) -> list[dict]:
        """`resolve` for each prefix, reading the registry once (a 1,000-run export would otherwise
        parse the whole index once per id)."""
        by_id = {record.get("id", ""): record for record in self._read()}
        found = []
        for prefix in prefixes:
            prefix = (prefix or "").strip()
            if prefix in by_id and prefix:
                found.append(by_id[prefix])
                continue
            matches = sorted(run_id for run_id in by_id if prefix and (
                run_id.startswith(prefix) or run_id.rsplit("-", 1)[-1].startswith(prefix)))
            if not matches:
                raise RunNotFound(prefix, self.path)
            if len(matches) > 1:
                raise AmbiguousRunId(prefix, matches)
            found.append(by_id[matches[0]])
        return self.with_details(found)

    def all(self, details: bool = False) -> list[dict]:
        """Every run's index row (the whole record with `details`), oldest first (by `created`,
        then id)."""
        return self._sorted(self._read(), details)

    def _sorted(self, rows: list[dict], details: bool) -> list[dict]:
        rows.sort(key=lambda r: (_time_key(r.get("created")), str(r.get("id"))))
        return self.with_details(rows) if details else rows

    def find(self, status: str | Iterable[str] | None = None, name: str | None = None,
             group: str | None = None, details: bool = False) -> list[dict]:
        """Rows (whole records with `details`) filtered by status (one or several), name
        (case-insensitive substring) and group (prefix of `group_hash`), oldest first."""
        statuses = {status} if isinstance(status, str) else set(status) if status is not None else None
        needle = name.lower() if name else None

        def keep(record: dict) -> bool:  # before copying and sorting: `find(status=...)` of 10,000 rows is cheap
            return ((statuses is None or record.get("status") in statuses)
                    and (needle is None or needle in str(record.get("name") or "").lower())
                    and (not group or str(record.get("group_hash") or "").startswith(group)))
        return self._sorted(self._read(keep), details)

    def __len__(self) -> int:
        return len(self._read())

    def update_checked(self, run_ids: list[str], decide: Callable[[list[dict]], dict[str, dict]]) -> list[str]:
        """Set fields that depend on the records as they stand under the lock: `decide` gets the
        current whole records of `run_ids` (those still indexed) and returns {run id: fields}. One
        locked write; returns the ids changed. (kdtui.core.lifecycle.reconcile: a run may have ended
        between the read that found it stale and this write.)"""
        with self._locked_index() as index:
            current = [self._whole(doc) for doc in map(index.get, dict.fromkeys(run_ids)) if doc is not None]
            changes = decide(current)
            docs = [{**doc, **changes[doc["id"]], "schema_version": SCHEMA_VERSION}
                    for doc in current if doc["id"] in changes]
            if docs:
                self._mirror(docs)
                index.put(docs)
        return [doc["id"] for doc in docs]


def _layout1_records(root: Any) -> dict[str, dict] | None:
    """The records of a layout-1 registry (TinyDB's default table held every record), by id;
    None if `root` is not one."""
    if not isinstance(root, dict) or "kdtui_registry" in root:
        return None
    table = root.get("_default")
    if not isinstance(table, dict) or set(root) - {"_default"}:
        return None
    return {doc["id"]: doc for doc in table.values() if isinstance(doc, dict) and isinstance(doc.get("id"), str)}


def record_with_history(store: RunStore, workspace: Workspace | None, run_id: str) -> dict:
    """The whole record of a run: the registry document plus `history`, the student's
    per-epoch metrics read from the run's events.jsonl. Raises RunNotFound."""
    record = store.get(run_id)
    if record is None:
        raise RunNotFound(run_id, store.path)
    ws = workspace or store.workspace
    return {**record, "history": eventlog.read_history(ws.events_path(run_id))}
