"""Typed progress events the engine hands to its caller's callback.

Each event turns into one flat JSON object (`to_dict`) with a `type`; `kdtui` appends them, with a
timestamp, to `runs/<id>/events.jsonl`, which the app and `kdtui runs tail` follow.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar


@dataclass
class Event:
    type: ClassVar[str] = "event"
    # When the event was written (unix time): None until the writer stamps the line, set on read.
    t: float | None = field(default=None, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON object: `t` first when stamped, then `type`, then the fields."""
        fields = asdict(self)
        t = fields.pop("t")
        head = {"t": t} if t is not None else {}
        return {**head, "type": self.type, **fields}


@dataclass
class PhaseStart(Event):
    """A phase begins: `teacher` (member `index` of `total`) or `student`."""
    type: ClassVar[str] = "phase_start"
    phase: str
    index: int = 0
    total: int = 1
    epochs: int = 0
    steps_per_epoch: int = 0
    reused: bool = False           # a teacher taken from the store instead of trained


@dataclass
class PhaseEnd(Event):
    type: ClassVar[str] = "phase_end"
    phase: str
    index: int = 0
    total: int = 1
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Progress(Event):
    """Step progress inside an epoch; emitted at most a few times a second."""
    type: ClassVar[str] = "progress"
    phase: str
    index: int
    epoch: int
    step: int
    steps: int


@dataclass
class EpochMetrics(Event):
    """Metrics at the end of an epoch (epoch 0 is the evaluation before training)."""
    type: ClassVar[str] = "epoch"
    phase: str
    index: int
    epoch: int
    metrics: dict[str, float]


@dataclass
class Done(Event):
    type: ClassVar[str] = "done"
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Failed(Event):
    type: ClassVar[str] = "failed"
    error: str
    phase: str = ""
    epoch: int = -1
    step: int = -1


@dataclass
class Log(Event):
    """A decision the run made that the user should see (e.g. whether the teacher cache is used)."""
    type: ClassVar[str] = "log"
    message: str = ""


EventCallback = Callable[[Event], None]


def ignore(event: Event) -> None:
    """A callback for callers that do not watch progress."""
