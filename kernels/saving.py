"""Writing torch files whole or not at all: checkpoints, stored teachers and teacher caches are read
by other processes (a resumed run, another sweep point) while they may be rewritten."""
from __future__ import annotations

from pathlib import Path

import torch

from kernels.atomic import atomic_output


def save_atomic(obj: object, path: Path) -> None:
    """torch.save through `kernels.atomic`: a reader sees the old file or the new one, never half of
    one (each writer has its own temporary file, so concurrent writers never share one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
