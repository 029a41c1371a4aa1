"""The teacher store: trained teachers kept by a content hash of everything that determines them.

A figure needs many students per teacher set, so a teacher is trained once per (teacher settings,
data settings, member seed) and reused. Training happens under a per-key file lock: a second run
that needs the same teacher waits, then loads it. Files are written whole (temp file + rename), so
no reader ever sees half a checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from filelock import FileLock

from kdtui.core.files import atomic_write
from kdtui.core.spec import Spec, teacher_key


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
