"""What a run's events say: `RunState` folds them into the run's state, `describe` turns one into a
line of text. The app's live view and log, the foreground progress display, `kdtui runs tail` and
the reconciliation of a run whose process is gone all read events through these two.

A run's log is append-only and a resumed run continues it, so a final event (`done`, `failed`,
`stopped`) ends the run only until training activity follows it (`ACTIVITY_EVENTS`: a phase
start or end, a step, an epoch). A `log` line or an unknown event after a final event leaves the
run ended. `RunState.feed_one` is the one place that applies this rule.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from kdtui.core.events import (
    ACTIVITY_EVENTS,
    FINAL_EVENTS,
    STUDENT,
    TEACHER,
    BadEvent,
    Done,
    EpochMetrics,
    Event,
    Failed,
    Log,
    PhaseEnd,
    PhaseStart,
    Progress,
    Stopped,
    UnknownEvent,
    parse,
)
from kdtui.core.timing import RunClock
from kdtui.core.vocabulary import metric_label, teacher_label, teacher_short

# The metrics an epoch's line shows, in this order.
EPOCH_LINE_METRICS = ("train_agreement", "test_agreement", "test_acc", "test_kl", "train_loss")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RunState:
    """One run's events folded into its phase, step, per-epoch metrics, final event and clock;
    bounded whatever the number of events.

    `rows` holds one dict per evaluated epoch of every phase (`phase`, `index`, `epoch`, metrics);
    a repeated epoch (a resumed run) replaces the older row. `final` is the event that ended the
    run, None while it goes on (or after it was resumed).
    """

    __slots__ = ("phase", "epoch", "step", "steps", "rows", "final", "last_t", "version", "events_seen",
                 "clock")

    def __init__(self, teachers: int | None = None):
        self.phase: PhaseStart | None = None  # the last phase start
        self.epoch = 0                        # of the current phase: the last one started (progress) or ended
        self.step = 0
        self.steps = 0
        self.rows: dict[tuple, dict] = {}     # (phase, index, epoch) -> metrics row, in arrival order
        self.final: Event | None = None
        self.last_t: float | None = None
        self.version = 0                      # bumped when rows change (curves redraw only then)
        self.events_seen = 0
        self.clock = RunClock(teachers)       # elapsed time and ETA, from the same events

    def feed(self, events: Iterable[Event | dict]) -> None:
        for event in events:
            self.feed_one(event)

    def feed_one(self, event: Event | dict) -> Event | None:
        """Fold one event (a decoded line is parsed first); returns it typed, or None for a line
        that is no event (skipped)."""
        try:
            event = parse(event)
        except BadEvent:
            return None
        self.events_seen += 1
        if _is_number(event.t):
            self.last_t = event.t
        # The reopen rule, here and nowhere else.
        if isinstance(event, FINAL_EVENTS):
            self.final = event
        elif isinstance(event, ACTIVITY_EVENTS):
            self.final = None  # training after a final event: the run was resumed
        self.clock.advance(event, ended=self.final is not None)
        if isinstance(event, Progress):
            self.epoch, self.step, self.steps = event.epoch, event.step, event.steps
        elif isinstance(event, PhaseStart):
            self.phase = event
            self.epoch, self.step = 0, 0
            self.steps = event.steps_per_epoch
        elif isinstance(event, EpochMetrics):
            row = {"phase": event.phase, "index": event.index, "epoch": event.epoch}
            row.update((k, v) for k, v in event.metrics.items() if k != "epoch")
            self.rows[(event.phase, event.index, event.epoch)] = row
            self.epoch = max(self.epoch, event.epoch)
            self.step = self.steps
            self.version += 1
        elif isinstance(event, PhaseEnd) and self.phase is not None:
            self.epoch = self.phase.epochs or self.epoch
            self.step = self.steps
        return event

    # -- views ------------------------------------------------------------------------------------

    def student_rows(self) -> list[dict]:
        return sorted((r for r in self.rows.values() if r["phase"] == STUDENT), key=lambda r: r["epoch"])

    def history(self) -> list[dict]:
        """The student's per-epoch metrics as flat dicts `{"epoch": e, **metrics}`, by epoch."""
        return [{k: v for k, v in row.items() if k not in ("phase", "index")} for row in self.student_rows()]

    def series(self, metric: str, phase: str = STUDENT) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        rows = self.student_rows() if phase == STUDENT else [r for r in self.rows.values() if r["phase"] == phase]
        for row in rows:
            value = row.get(metric)
            if _is_number(value) and value == value:
                xs.append(row["epoch"])
                ys.append(float(value))
        return xs, ys

    def latest(self, metric: str) -> float | None:
        """The metric's value at the last student epoch that has it."""
        for row in reversed(self.student_rows()):
            value = row.get(metric)
            if _is_number(value):
                return float(value)
        return None

    def phase_text(self) -> str:
        """'teacher 1/2' or 'student' (the phase now running, or the last one)."""
        return phase_label(self.phase) if self.phase else ""

    def progress_text(self) -> str:
        """Compact 'epoch k/N of the current phase': 'S 3/20', 'T1 5/20' (teacher member 1)."""
        if not self.phase:
            return ""
        if self.phase.phase == TEACHER:
            prefix = teacher_short(self.phase.index)
            if self.phase.reused:
                return f"{prefix} reuse"
        else:
            prefix = "S"
        return f"{prefix} {self.epoch}/{self.phase.epochs}"

    def fraction(self) -> tuple[float, float]:
        """(steps done, steps in all) of the current phase, for a progress bar."""
        if not self.phase:
            return 0.0, 1.0
        epochs = self.phase.epochs
        steps = self.steps or self.phase.steps_per_epoch
        if epochs <= 0 or steps <= 0:
            return 1.0, 1.0
        done = max(self.epoch - 1, 0) * steps + self.step if self.step < steps else self.epoch * steps
        return float(min(done, epochs * steps)), float(epochs * steps)


# -- one event as a line of text --------------------------------------------------------------------

def phase_label(event: PhaseStart | PhaseEnd | Progress | EpochMetrics | Failed) -> str:
    """'teacher 2/3' (teachers numbered from 1, as everywhere), 'student', 'independent'."""
    if event.phase == TEACHER:
        return teacher_label(getattr(event, "index", 0), getattr(event, "total", None))
    return event.phase


def _metric_parts(metrics: dict, names: Iterable[str]) -> list[str]:
    return [f"{metric_label(name)} {metrics[name]:.3f}" for name in names if _is_number(metrics.get(name))]


def describe(event: Event, timed: bool = False) -> str:
    """One event as plain text (never markup): the app's log and live log, `runs tail` and the
    progress display's metrics line all show this. `timed` puts the local time first."""
    text = _describe(event)
    if not timed:
        return text
    clock = time.strftime("%H:%M:%S", time.localtime(event.t)) if _is_number(event.t) else "--:--:--"
    return f"{clock} {text}"


def _describe(event: Event) -> str:
    if isinstance(event, EpochMetrics):
        return "  ".join([f"{phase_label(event)} epoch {event.epoch}", *_metric_parts(event.metrics, EPOCH_LINE_METRICS)])
    if isinstance(event, Progress):
        return f"{phase_label(event)} epoch {event.epoch} step {event.step}/{event.steps}"
    if isinstance(event, PhaseStart):
        if event.reused:
            return f"{phase_label(event)}: reused from the teacher store"
        return f"{phase_label(event)}: start, {event.epochs} epochs × {event.steps_per_epoch} steps"
    if isinstance(event, PhaseEnd):
        return f"{phase_label(event)}: end"
    if isinstance(event, Done):
        return "  ".join(["done", *_metric_parts(event.metrics, ("test_agreement", "test_acc"))])
    if isinstance(event, Failed):
        where = [event.phase] if event.phase else []
        if event.epoch >= 0:
            where.append(f"epoch {event.epoch}")
        return "FAILED" + (f" ({', '.join(where)})" if where else "") + f": {event.error}"
    if isinstance(event, Stopped):
        return "stopped" + (f": {event.message}" if event.message else "")
    if isinstance(event, Log):
        return event.message
    if isinstance(event, UnknownEvent):  # from a newer kdtui: its type and fields as they are
        fields = " ".join(f"{key}={value}" for key, value in event.data.items())
        return f"{event.name} (unknown event) {fields}".rstrip()
    return event.type
