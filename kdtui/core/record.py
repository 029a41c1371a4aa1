"""The run record: every field a run's `record.json` (and its index row) can hold, typed.

`RunRecord` is the shape, for readers of the code and for type checkers; `FIELDS` is the same
shape as data, which `record_problem` checks a record against when it is read (a hand-edited or
damaged record.json never reaches a list or a view) and which decides what an index row may keep.
[docs/records.md](../../docs/records.md) says, for each field, what writes it, when, and what it
means; a test keeps the three in step.

Plain dicts and `type(value) in types`, not pydantic: the app and `kdtui runs list` check 10,000
rows on every read of the index, and importing this module must stay cheap.

A record from an older kdtui still reads: every field but `id` may be missing (readers default
it), times may be ISO strings (the first records), and fields this version does not know are
kept in record.json and left out of the index.
"""
from __future__ import annotations

import math
from typing import Any, TypedDict

from kdtui.core.events import DONE, QUEUED

SCHEMA_VERSION = 2  # 1: before `preset` / `preset_scale`; older records read the same way


class RunRecord(TypedDict, total=False):
    # identity and the spec it runs
    id: str
    name: str
    spec: dict
    spec_hash: str | None
    group_hash: str | None
    preset: str | None
    preset_scale: str | None
    # the user's own words about it (kdtui runs note / tag / rename)
    note: str | None
    tags: list
    # state (kdtui.core.lifecycle changes `status`)
    status: str
    error: str | None
    created: float | str | None
    started: float | str | None
    finished: float | str | None
    # where and by whom it runs
    host: str | None
    pid: int | None
    device: str | None
    environment: dict | None
    nproc: int | None
    executor: str | None
    worker: int | None
    slot: str | None
    gpu: str | None
    taken: float | None
    worker_host: str | None
    checkpoints: str | None
    slurm_job: str | None
    # results
    metrics: dict
    last_epoch_metrics: dict | None
    teachers: list
    teacher_cache: dict | None
    peak_memory_bytes: int | None
    peak_memory_kind: str | None
    schema_version: int


_NONE = type(None)
_NUMBER = (int, float)
_TIME = (int, float, str, _NONE)  # seconds since the epoch; the first records wrote ISO text

# field -> the JSON types its value may have (checked as `type(value) in types`, so a bool is
# never taken for a number)
FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "name": (str,),
    "spec": (dict,),
    "spec_hash": (str, _NONE),
    "group_hash": (str, _NONE),
    "preset": (str, _NONE),
    "preset_scale": (str, _NONE),
    "note": (str, _NONE),
    "tags": (list,),
    "status": (str,),
    "error": (str, _NONE),
    "created": _TIME,
    "started": _TIME,
    "finished": _TIME,
    "host": (str, _NONE),
    "pid": (int, _NONE),
    "device": (str, _NONE),
    "environment": (dict, _NONE),
    "nproc": (int, _NONE),
    "executor": (str, _NONE),
    "worker": (int, _NONE),
    "slot": (str, _NONE),
    "gpu": (str, _NONE),
    "taken": (*_NUMBER, _NONE),
    "worker_host": (str, _NONE),
    "checkpoints": (str, _NONE),
    "slurm_job": (str, _NONE),
    "metrics": (dict,),
    "last_epoch_metrics": (dict, _NONE),
    "teachers": (list,),
    "teacher_cache": (dict, _NONE),
    "peak_memory_bytes": (int, _NONE),
    "peak_memory_kind": (str, _NONE),
    "schema_version": (int,),
}
# The fields a new record starts with, in this order (record.json lists them first).
CORE_KEYS = (
    "id", "name", "status", "spec", "spec_hash", "group_hash", "metrics", "teachers", "device",
    "host", "pid", "created", "started", "finished", "error",
)
# What a reader assumes for a core field a record lacks.
DEFAULTS: dict[str, Any] = {
    "name": "", "status": QUEUED, "spec": {}, "spec_hash": None, "group_hash": None, "metrics": {}, "teachers": [],
    "device": None, "host": None, "pid": None, "started": None, "finished": None, "error": None,
}

_JSON_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", dict: "an object", list: "a list",
                    bool: "true/false", _NONE: "null"}


def default(key: str) -> Any:
    """A fresh copy of the default of a core field."""
    value = DEFAULTS[key]
    return value.copy() if isinstance(value, (dict, list)) else value


def record_problem(doc: Any) -> str | None:
    """Why `doc` is not a record this version can use (one phrase), or None. Unknown fields are
    not a problem: a newer kdtui may have written them."""
    if type(doc) is not dict:
        return "is not a JSON object"
    if type(doc.get("id")) is not str or not doc["id"]:
        return "has no text 'id'"
    return fields_problem(doc)


def fields_problem(fields: dict) -> str | None:
    """The first known field of `fields` whose value has the wrong type (one phrase), or None."""
    for key, value in fields.items():
        types = FIELDS.get(key)
        if types is not None and type(value) not in types:
            wanted = " or ".join(dict.fromkeys(_JSON_TYPE_NAMES[t] for t in types))
            return f"field '{key}' is {_JSON_TYPE_NAMES.get(type(value), type(value).__name__)}, expected {wanted}"
    return None


def known_fields(doc: dict) -> dict:
    """`doc` less the fields this version does not know (what an index row may hold)."""
    return {k: v for k, v in doc.items() if k in FIELDS}


def shown_metrics(record: dict) -> tuple[dict, int | None]:
    """The metrics a view shows for a run, and None, when they are its final `metrics`; for a run
    without final metrics (stopped), those of its last finished epoch (`last_epoch_metrics`, else
    the last entry of the `history` a whole record may carry) and that epoch's number, which the
    view shows beside them (`epoch 3`)."""
    metrics = record.get("metrics")
    if metrics or record.get("status") == DONE:
        return metrics or {}, None
    last = record.get("last_epoch_metrics")
    if not isinstance(last, dict):
        history = record.get("history")
        last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else None
    epoch = last.get("epoch") if last else None
    if type(epoch) is not int or epoch < 1:
        return {}, None
    return {k: v for k, v in last.items() if k != "epoch"}, epoch


# -- metric bounds ---------------------------------------------------------------------------------

KL_TOLERANCE = 1e-6  # a KL divergence is ≥ 0; float sums may land a rounding error below


class MetricOutOfBounds(ValueError):
    """A final metric that cannot be right; the message names it and its value."""


def _bounds(name: str) -> tuple[float, float] | None:
    if "agreement" in name or name.endswith("_acc") or name.endswith("_ece"):
        return 0.0, 1.0
    if name.endswith("_kl"):
        return -KL_TOLERANCE, math.inf
    return None


def metric_problem(metrics: dict) -> str | None:
    """Why a run's final metrics cannot be stored as a finished run's (one line), or None: every
    number must be finite (NaN, inf or null means the run failed), agreements, accuracies and calibration
    errors lie in [0, 1], KL divergences are ≥ 0 up to rounding."""
    for name, value in metrics.items():
        if value is None:  # JSON has no NaN: a NaN written to a run's log reads back as null
            return f"metric {name} = null: not a number"
        if type(value) not in (int, float):
            continue
        if not math.isfinite(value):
            return f"metric {name} = {value}: not a finite number"
        bounds = _bounds(name)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            low, high = bounds
            where = f"[{low:g}, {high:g}]" if math.isfinite(high) else f"≥ {low:g}"
            return f"metric {name} = {value!r}: outside {where}"
    return None


def check_metrics(metrics: dict) -> None:
    """Raise MetricOutOfBounds if `metric_problem` finds one."""
    problem = metric_problem(metrics)
    if problem is not None:
        raise MetricOutOfBounds(problem)
