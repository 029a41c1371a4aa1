"""The teacher store: trained teachers kept by a content hash of everything that determines them.

A figure needs many students per teacher set, so a teacher is trained once per (teacher settings,
data settings, member seed) and reused. Training happens under a per-key file lock: a second run
that needs the same teacher waits, then loads it. Files are written whole (temp file + rename), so
no reader ever sees half a checkpoint.

Each teacher's folder holds its checkpoint, its meta.json (the settings it was trained with) and its
output caches (kernels.teacher_cache), which can take GBs; `entries` sizes them and `prune` removes
teachers that no queued or running run needs.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from filelock import FileLock

from kdtui.core.files import atomic_write
from kdtui.core.spec import Spec, spec_from_dict, teacher_key

INDEPENDENT_SEED_OFFSET = 1000  # the E12 control's teachers: the run's seed plus this
USED_NAME = "last-used"         # touched whenever a run obtains the teacher


class TeacherStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key / "teacher.pt"

    def cache_dir(self, key: str) -> Path:
        """Where the teacher's output cache lives (kernels.teacher_cache): beside it, shared by every run."""
        return self.root / key

    def obtain(self, spec: Spec, member: int, train: Callable[[Path], "object"], load: Callable[[Path], "object"],
               save: Callable[["object", Path], None], retrain: bool = False, shards=None):
        """The teacher for `member`: loaded when stored, else trained (once, even across processes).

        `train(checkpoint_path)` trains and returns the teacher; its progress checkpoint lives in the
        store, so a teacher interrupted mid-training resumes instead of starting over.
        Under data parallelism (`shards` of kernels.distributed), the run's processes train or load
        together: the main one holds the lock, decides, and tells the others.
        Returns (teacher, key, reused).
        """
        key = teacher_key(spec, member)
        folder = self.root / key
        final, progress = self.path(key), folder / "progress.pt"
        self._touch(key)
        if shards is not None and not shards.main:
            if shards.broadcast(None):
                return load(final), key, True
            return train(progress), key, False
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / "lock")):
            reuse = final.exists() and not retrain
            if retrain and progress.exists():
                progress.unlink()
            if shards is not None:
                shards.broadcast(reuse)
            if reuse:
                return load(final), key, True
            teacher = train(progress)
            save(teacher, final)
            meta = {"key": key, "member": member, "teacher": spec.teacher.model_dump(mode="json"),
                    "data": spec.data.model_dump(mode="json"), "seed": spec.seed}
            atomic_write(folder / "meta.json", json.dumps(meta, indent=2))
            progress.unlink(missing_ok=True)
            return teacher, key, False

    def _touch(self, key: str) -> None:
        """Record a use (the file's mtime), for `entries` and `prune`; a store that cannot be written
        fails later, where the teacher is saved, with its own message."""
        try:
            (self.root / key).mkdir(parents=True, exist_ok=True)
            (self.root / key / USED_NAME).touch()
        except OSError:
            pass

    def entries(self, runs: Iterable[dict] = ()) -> list["StoredTeacher"]:
        """Every teacher folder in the store (symbolic links are not the store's and are left out),
        oldest use first; `runs` (records with their teachers) name the runs that used each."""
        used_by: dict[str, list[str]] = {}
        for record in runs:
            for teacher in record.get("teachers") or []:
                if isinstance(teacher, dict) and teacher.get("key"):
                    used_by.setdefault(teacher["key"], []).append(str(record.get("id", "")))
        out = []
        try:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())
        except FileNotFoundError:
            return []
        for folder in folders:
            size, newest = _size_and_mtime(folder)
            try:
                used = os.stat(folder / USED_NAME).st_mtime
            except OSError:
                used = newest
            out.append(StoredTeacher(folder.name, folder, _summary(folder), size, used, used_by.get(folder.name, [])))
        return sorted(out, key=lambda t: t.last_used)

    def remove(self, entry: "StoredTeacher") -> bool:
        """Delete a teacher's folder unless a run holds its lock right now (training or loading it)."""
        from filelock import Timeout

        if entry.folder.is_symlink() or entry.folder.parent != self.root:
            return False
        try:
            with FileLock(str(entry.folder / "lock"), timeout=0):
                shutil.rmtree(entry.folder)
        except Timeout:
            return False
        except FileNotFoundError:  # the lock file's folder went away with the tree: removed
            pass
        return True


    def total_bytes(self) -> int:
        """Bytes on disk of every teacher folder (checkpoints and caches), for the app's help screen."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            return 0
        return sum(_size_and_mtime(folder)[0] for folder in folders)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class StoredTeacher:
    key: str
    folder: Path
    summary: str          # what it is: model, epochs, data, seed, member
    bytes: int            # on disk: checkpoint, caches and everything else in its folder
    last_used: float      # unix time
    runs: list[str] = field(default_factory=list)


def _size_and_mtime(folder: Path) -> tuple[int, float]:
    size, newest = 0, 0.0
    for path in folder.rglob("*"):
        try:
            st = path.lstat()
        except OSError:
            continue
        if not path.is_dir():
            size += st.st_size
        newest = max(newest, st.st_mtime)
    return size, newest


def _summary(folder: Path) -> str:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        teacher, data = meta["teacher"], meta["data"]
        return (f"{teacher['model']} {teacher['epochs']} ep, {data['dataset']}, seed {meta['seed']}, "
                f"member {meta['member']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "(no meta.json: unfinished or damaged)"


def needed_keys(spec_data: dict) -> set[str]:
    """The store keys a run of this (resolved) spec obtains: its members, and the control's if any."""
    spec = spec_from_dict(spec_data)
    specs = [spec]
    if spec.eval.independent:
        specs.append(spec.model_copy(update={"seed": spec.seed + INDEPENDENT_SEED_OFFSET}))
    return {teacher_key(s, k) for s in specs for k in range(s.teacher.members)}


def keys_in_use(records: Iterable[dict], active: Iterable[str]) -> tuple[set[str], list[str]]:
    """Every teacher a queued or running run has obtained or will obtain, and the ids of active runs
    whose spec cannot be read (which teachers they need is then unknown: prune must not guess)."""
    active = set(active)
    keys: set[str] = set()
    unreadable: list[str] = []
    for record in records:
        if record.get("status") not in active:
            continue
        keys |= {t["key"] for t in record.get("teachers") or [] if isinstance(t, dict) and t.get("key")}
        try:
            keys |= needed_keys(record.get("spec") or {})
        except Exception:  # SpecError, or a record of the wrong shape
            unreadable.append(str(record.get("id", "?")))
    return keys, unreadable


def prune_plan(entries: list[StoredTeacher], in_use: set[str], *, older_than_s: float | None = None,
               max_bytes: int | None = None, now: float | None = None) -> list[StoredTeacher]:
    """What `prune` removes: teachers not in use and unused for longer than `older_than_s`, then the
    least recently used of the rest until the store fits `max_bytes`. A teacher in use is never chosen."""
    now = time.time() if now is None else now
    free = [e for e in sorted(entries, key=lambda e: e.last_used) if e.key not in in_use]
    chosen = [e for e in free if older_than_s is not None and now - e.last_used > older_than_s]
    if max_bytes is not None:
        total = sum(e.bytes for e in entries) - sum(e.bytes for e in chosen)
        for e in free:
            if total <= max_bytes:
                break
            if e not in chosen:
                chosen.append(e)
                total -= e.bytes
    return chosen
