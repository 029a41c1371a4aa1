"""How long ago something happened, in the few characters a table column has: `12s`, `3m`, `5h`, `2d`."""
from __future__ import annotations

import time
from typing import Any


def age_text(ts: Any, now: float | None = None) -> str:
    """The time since `ts` (seconds since the epoch) in its largest whole unit; `—` without a time."""
    if not isinstance(ts, (int, float)):
        return "—"
    seconds = max((now or time.time()) - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
