"""The one vocabulary of a run: its statuses, its phases, and the events of its `events.jsonl`.

The engine's events (kernels.events) and the runner's own (`Stopped`) are dataclasses with a
`type`; everything that writes an event builds one of them, and everything that reads a line turns
it into one with `parse`, so no other module spells a status or an event type as a string.
docs/events.md describes every event.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from kernels.events import Done, EpochMetrics, Event, Failed, Log, PhaseEnd, PhaseStart, Progress

__all__ = [
    "QUEUED", "RUNNING", "DONE", "FAILED", "STOPPED", "INTERRUPTED", "STATUSES", "ACTIVE_STATUSES",
    "FINAL_STATUSES", "RESUMABLE_STATUSES", "TEACHER", "STUDENT", "Event", "PhaseStart", "PhaseEnd",
    "Progress", "EpochMetrics", "Done", "Failed", "Stopped", "Log", "UnknownEvent", "BadEvent",
    "EVENT_CLASSES", "EVENT_TYPES", "FINAL_EVENTS", "ACTIVITY_EVENTS",
    "final_status", "parse", "as_dict",
]

# -- statuses (the record's `status`) --------------------------------------------------------------
QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STOPPED = "stopped"
INTERRUPTED = "interrupted"  # its process died without a final event

STATUSES = (QUEUED, RUNNING, DONE, FAILED, STOPPED, INTERRUPTED)
ACTIVE_STATUSES = frozenset({QUEUED, RUNNING})
FINAL_STATUSES = frozenset({DONE, FAILED, STOPPED, INTERRUPTED})
RESUMABLE_STATUSES = frozenset({STOPPED, INTERRUPTED, FAILED})

# -- phases (an event's `phase`) -------------------------------------------------------------------
TEACHER = "teacher"
STUDENT = "student"   # E12's student trained without a teacher has its own phase, `independent`


# -- the runner's own event (the engine's come from kernels.events) --------------------------------

@dataclass
class Stopped(Event):
    """The run stopped on request (STOP file, SIGTERM, Ctrl-C); its checkpoint is kept."""
    type: ClassVar[str] = "stopped"
    message: str = ""


@dataclass
class UnknownEvent(Event):
    """A line whose type this version does not know (a newer kdtui wrote it): kept as it was, shown
    in the log, and ignored by the fold (it neither ends nor reopens a run)."""
    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:  # type: ignore[override]  (the line's own type, not a class's)
        return self.name

    def to_dict(self) -> dict[str, Any]:
        head = {"t": self.t} if self.t is not None else {}
        return {**head, "type": self.name, **self.data}


class BadEvent(ValueError):
    """A line that is no event: not JSON, not an object, no type, or fields of the wrong kind."""


EVENT_CLASSES: tuple[type[Event], ...] = (PhaseStart, PhaseEnd, Progress, EpochMetrics, Done, Failed, Stopped,
                                          Log)
EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in EVENT_CLASSES}

# A run whose log ends in one of these has ended.
FINAL_EVENTS = (Done, Failed, Stopped)
# Training activity: after a final event one of these means the run was resumed (see RunState).
# A `Log` line (e.g. "results are in ...") and an unknown event are neither.
ACTIVITY_EVENTS = (PhaseStart, PhaseEnd, Progress, EpochMetrics)

_STATUS_OF_FINAL = {Done: DONE, Failed: FAILED, Stopped: STOPPED}


def final_status(event: Event) -> str:
    """The record status a final event settles a run with."""
    return _STATUS_OF_FINAL[type(event)]


# -- reading a line --------------------------------------------------------------------------------

def _accepts(hint: Any) -> tuple[type, ...]:
    """The JSON value types a field of this annotation takes (ints where floats go)."""
    hint = typing.get_origin(hint) or hint
    if hint in (typing.Union, types.UnionType):
        return (int, float, type(None))  # only `t: float | None` is a union
    if hint is float:
        return (int, float)
    return (hint,)


def _field_specs(cls: type[Event]) -> list[tuple[str, tuple[type, ...], bool]]:
    """(name, accepted types, required) for each field of an event class."""
    hints = typing.get_type_hints(cls)
    return [(f.name, _accepts(hints[f.name]), f.default is MISSING and f.default_factory is MISSING)
            for f in fields(cls)]


_SPECS = {name: _field_specs(cls) for name, cls in EVENT_TYPES.items()}
_ABSENT = object()


def _checked(name: str, key: str, value: Any, accepted: tuple[type, ...]) -> Any:
    """`value` if a field that takes `accepted` may hold it (bool is an int to Python, but never an
    epoch or a step count here)."""
    if isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool)):
        return value
    raise BadEvent(f"{name}: '{key}' is {type(value).__name__}")


def parse(line: str | bytes | dict | Event) -> Event:
    """One line of `events.jsonl` (text, or its decoded object) as a typed event.

    Fields a newer kdtui added are dropped, a missing field takes the class's default, and a type
    this version does not know becomes an `UnknownEvent`. Raises BadEvent for anything else.
    """
    if isinstance(line, Event):
        return line
    if isinstance(line, (str, bytes)):
        try:
            line = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(line, dict):
        raise BadEvent(f"not a JSON object: {type(line).__name__}")
    name = line.get("type")
    specs = _SPECS.get(name) if isinstance(name, str) else None
    if specs is None:
        if not isinstance(name, str) or not name:
            raise BadEvent("no 'type'")
        t = line.get("t")
        if t is not None:
            _checked(name, "t", t, (int, float))
        return UnknownEvent(name=name, data={k: v for k, v in line.items() if k not in ("t", "type")}, t=t)
    values = {}
    for key, accepted, required in specs:  # a few hundred thousand lines a long run: kept lean
        value = line.get(key, _ABSENT)
        if value is _ABSENT:
            if required:
                raise BadEvent(f"{name}: no '{key}'")
            continue
        if type(value) not in accepted:  # JSON gives exact types; anything else is looked at closer
            value = _checked(name, key, value, accepted)
        values[key] = value
    return EVENT_TYPES[name](**values)


def as_dict(event: Event | dict) -> dict:
    """An event as its JSON line's object."""
    return event if isinstance(event, dict) else event.to_dict()
