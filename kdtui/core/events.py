"""The one vocabulary of a run: its statuses, and the events of its `events.jsonl`.

The engine's events (kernels.events) and the runner's own (`Stopped`, `Log`) are dataclasses with
a `type`; everything that writes an event builds one of them, and everything that reads a line
compares its `type` with these classes' `type`, never with a string typed somewhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kernels.events import Done, EpochMetrics, Event, Failed, PhaseEnd, PhaseStart, Progress

__all__ = [
    "QUEUED", "RUNNING", "DONE", "FAILED", "STOPPED", "INTERRUPTED", "STATUSES", "ACTIVE_STATUSES",
    "FINAL_STATUSES", "RESUMABLE_STATUSES", "Event", "PhaseStart", "PhaseEnd", "Progress", "EpochMetrics",
    "Done", "Failed", "Stopped", "Log", "FINAL_EVENT_TYPES", "as_dict",
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


# -- the runner's own events (the engine's come from kernels.events) -------------------------------

@dataclass
class Stopped(Event):
    """The run stopped on request (STOP file, SIGTERM, Ctrl-C); its checkpoint is kept."""
    type: ClassVar[str] = "stopped"
    message: str = ""


@dataclass
class Log(Event):
    """A line for the run's log; it never changes the run's state."""
    type: ClassVar[str] = "log"
    message: str = ""


# A run whose log ends in one of these has ended; a resumed run appends after it.
FINAL_EVENT_TYPES = frozenset({Done.type, Failed.type, Stopped.type})


def as_dict(event: Event | dict) -> dict:
    """An event as its JSON line's object (without the time stamp the writer adds)."""
    return event if isinstance(event, dict) else event.to_dict()
