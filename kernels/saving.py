"""Writing torch files whole or not at all: checkpoints, stored teachers and teacher caches are read
by other processes (a resumed run, another sweep point) while they may be rewritten."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(obj: object, path: Path) -> None:
    """torch.save into a temporary file beside `path`, flushed to disk, then renamed over it: a
    reader sees the old file or the new one, never half of one (the name carries the pid, so
    concurrent writers never share a temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
