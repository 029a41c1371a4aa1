"""A run's spec as flat dotted keys (`distill.temperature`), the rows every comparison, label and
report is made of. Its own module because both `compare` and `labels` build on it."""
from __future__ import annotations

from typing import Any, Iterable

# Spec keys a comparison never shows: the free-text name (the column says which run) and the sweep
# (a run is one point of it; its values are already in the spec).
DROPPED_SPEC_KEYS = ("name", "sweep")


def join_values(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def flatten_spec(spec: dict | None) -> dict[str, Any]:
    """The spec as dotted keys in spec order ("seed", "distill.temperature", ...); lists become
    comma-joined strings ("crop, hflip"); "name" and "sweep" are left out."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, table: dict) -> None:
        for key, value in table.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(path + ".", value)
            elif isinstance(value, (list, tuple)):
                flat[path] = join_values(value)
            else:
                flat[path] = value

    walk("", {k: v for k, v in (spec or {}).items() if k not in DROPPED_SPEC_KEYS})
    return flat
