"""Messages the worker threads post to the app (dataclasses, one per kind of news)."""
from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from kdtui.core.events import Event


@dataclass
class RunsLoaded(Message):
    """The registry changed; these are all its records, oldest first. `error`: the registry cannot
    be read as it is (one line, e.g. naming `kdtui runs reindex`), and `records` is empty."""
    records: list[dict]
    error: str = ""


@dataclass
class EventsBatch(Message):
    """New events of followed runs since the last poll (run id -> compacted, typed events)."""
    events: dict[str, list[Event]]
    read_at: float = 0.0


@dataclass
class TaskDone(Message):
    """A background action (launch, stop, resume, delete, save, export) finished."""
    message: str
    severity: str = "information"
    run_ids: list[str] = field(default_factory=list)
    kind: str = ""
