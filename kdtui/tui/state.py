"""What the app keeps of each run, independent of any widget (and of Textual).

A run's event stream can grow to hundreds of thousands of lines (one `progress` event per step), so
the app never keeps the events themselves: `RunLive` folds them into the per-epoch rows the curves
and the table show, the current phase and step, the final event, and the last `LOG_LINES` lines of
the log. `compact_events` drops what `RunLive` would throw away anyway before a batch crosses from
the reading thread to the UI thread.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable

from kdtui.core.events import ACTIVE_STATUSES, DONE, FINAL_EVENT_TYPES
from kdtui.core.timing import RunClock, format_duration
from kdtui.core.vocabulary import metric_label, teacher_label, teacher_short

LOG_LINES = 500
ACTIVE = ACTIVE_STATUSES
# The curves of the live screen (agreement is the headline: docs/metrics.md, "Fidelity").
AGREEMENT = ("train_agreement", "test_agreement")
EPOCH_COLUMNS = ("train_agreement", "test_agreement", "train_agreement_eval", "test_acc", "test_kl",
                 "test_nll", "test_ece", "train_loss", "lr")


def compact_events(events: list[dict]) -> list[dict]:
    """The events of one batch that change what the app shows: every event but `progress`, of
    which only the last one counts. Order is kept."""
    last_progress = None
    for i in range(len(events) - 1, -1, -1):
        if events[i].get("type") == "progress":
            last_progress = i
            break
    return [e for i, e in enumerate(events) if e.get("type") != "progress" or i == last_progress]


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "—"


def _clock(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else "--:--:--"


def _phase_label(event: dict) -> str:
    if event.get("phase") == "teacher":
        return teacher_label(event.get("index", 0) or 0, event.get("total"))
    return str(event.get("phase") or "")


def describe_event(event: dict) -> str | None:
    """One log line for an event (None for `progress`, which the progress bar shows instead)."""
    kind = event.get("type")
    head = f"{_clock(event.get('t'))} "
    if kind == "progress":
        return None
    if kind == "epoch":
        metrics = event.get("metrics") or {}
        parts = [f"{_phase_label(event)} epoch {event.get('epoch')}"]
        for name in ("train_agreement", "test_agreement", "test_acc", "test_kl", "train_loss"):
            if isinstance(metrics.get(name), (int, float)):
                parts.append(f"{metric_label(name)} {metrics[name]:.3f}")
        return head + "  ".join(parts)
    if kind == "phase_start":
        if event.get("reused"):
            return head + f"{_phase_label(event)}: reused from the teacher store"
        return head + f"{_phase_label(event)}: start, {event.get('epochs')} epochs × {event.get('steps_per_epoch')} steps"
    if kind == "phase_end":
        return head + f"{_phase_label(event)}: end"
    if kind == "done":
        metrics = event.get("metrics") or {}
        return head + (f"done  {metric_label('test_agreement')} " + _num(metrics.get("test_agreement"))
                       + f"  {metric_label('test_acc')} " + _num(metrics.get("test_acc")))
    if kind == "failed":
        where = []
        if event.get("phase"):
            where.append(str(event["phase"]))
        if isinstance(event.get("epoch"), int) and event["epoch"] >= 0:
            where.append(f"epoch {event['epoch']}")
        return head + "FAILED" + (f" ({', '.join(where)})" if where else "") + f": {event.get('error', '')}"
    if kind == "stopped":
        return head + "stopped" + (f": {event['message']}" if event.get("message") else "")
    if kind == "log":
        return head + str(event.get("message", ""))
    return head + str(kind)


class RunLive:
    """One run's event stream folded into what the app shows; bounded whatever the stream's length.

    `rows` holds one dict per evaluated epoch of every phase (`phase`, `index`, `epoch`, metrics),
    `log` the last `LOG_LINES` lines, `log_total` how many lines were ever added (a widget that has
    shown n lines shows the newest `log_total - n` of `log` next).
    """

    __slots__ = ("run_id", "phase", "epoch", "step", "steps", "rows", "final", "log", "log_total",
                 "events_seen", "last_t", "version", "clock")

    def __init__(self, run_id: str, log_lines: int = LOG_LINES):
        self.run_id = run_id
        self.phase: dict | None = None      # the last phase_start
        self.epoch = 0                      # of the current phase: the last one started (progress) or ended
        self.step = 0
        self.steps = 0
        self.rows: dict[tuple, dict] = {}   # (phase, index, epoch) -> metrics row, in arrival order
        self.final: dict | None = None
        self.log: deque[str] = deque(maxlen=log_lines)
        self.log_total = 0
        self.events_seen = 0
        self.last_t: float | None = None
        self.version = 0                    # bumped when rows change (curves redraw only then)
        self.clock = RunClock()             # elapsed time and ETA, from the same events

    def feed(self, events: Iterable[dict]) -> None:
        for event in events:
            self.events_seen += 1
            self.clock.feed((event,))
            kind = event.get("type")
            if isinstance(event.get("t"), (int, float)):
                self.last_t = event["t"]
            if kind == "progress":
                self.final = None  # activity after a final event: the run was resumed
                self.epoch = event.get("epoch", self.epoch) or 0
                self.step = event.get("step", 0) or 0
                self.steps = event.get("steps", 0) or 0
                continue
            if kind in FINAL_EVENT_TYPES:
                self.final = event
            elif kind != "log":
                self.final = None  # activity after a final event: the run was resumed
            if kind == "phase_start":
                self.phase = event
                self.epoch, self.step = 0, 0
                self.steps = event.get("steps_per_epoch") or 0
                if event.get("reused"):
                    self.epoch = 0
            elif kind == "epoch":
                phase = event.get("phase", "student")
                row = {"phase": phase, "index": event.get("index", 0) or 0, "epoch": event.get("epoch")}
                row.update((k, v) for k, v in (event.get("metrics") or {}).items() if k != "epoch")
                self.rows[(phase, row["index"], row["epoch"])] = row
                self.epoch = max(self.epoch, event.get("epoch") or 0)
                self.step = self.steps
                self.version += 1
            elif kind == "phase_end" and self.phase is not None:
                self.epoch = self.phase.get("epochs") or self.epoch
                self.step = self.steps
            line = describe_event(event)
            if line is not None:
                self.log.append(line)
                self.log_total += 1

    # -- views --

    def student_rows(self) -> list[dict]:
        return sorted((r for r in self.rows.values() if r["phase"] == "student"),
                      key=lambda r: (r["epoch"] is None, r["epoch"] or 0))

    def series(self, metric: str, phase: str = "student") -> tuple[list[float], list[float]]:
        xs, ys = [], []
        rows = self.student_rows() if phase == "student" else [r for r in self.rows.values() if r["phase"] == phase]
        for row in rows:
            value = row.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                xs.append(row["epoch"] or 0)
                ys.append(float(value))
        return xs, ys

    def latest(self, metric: str) -> float | None:
        """The metric's value at the last student epoch that has it."""
        for row in reversed(self.student_rows()):
            value = row.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    def phase_text(self) -> str:
        """'teacher 1/2' or 'student' (the phase now running, or the last one)."""
        return _phase_label(self.phase) if self.phase else ""

    def progress_text(self) -> str:
        """Compact 'epoch k/N of the current phase': 'S 3/20', 'T1 5/20' (teacher member 1)."""
        if not self.phase:
            return ""
        epochs = self.phase.get("epochs") or 0
        if self.phase.get("phase") == "teacher":
            prefix = teacher_short(self.phase.get("index") or 0)
            if self.phase.get("reused"):
                return f"{prefix} reuse"
        else:
            prefix = "S"
        return f"{prefix} {self.epoch}/{epochs}"

    def fraction(self) -> tuple[float, float]:
        """(steps done, steps in all) of the current phase, for a progress bar."""
        if not self.phase:
            return 0.0, 1.0
        epochs = self.phase.get("epochs") or 0
        steps = self.steps or self.phase.get("steps_per_epoch") or 0
        if epochs <= 0 or steps <= 0:
            return 1.0, 1.0
        done = max(self.epoch - 1, 0) * steps + self.step if self.step < steps else self.epoch * steps
        return float(min(done, epochs * steps)), float(epochs * steps)


# -- the runs table -------------------------------------------------------------------------------

def record_metric(record: dict, live: RunLive | None, metric: str) -> float | None:
    """A run's latest value of `metric`: the stream's newest epoch while it runs, else the record's."""
    if live is not None and (record.get("status") in ACTIVE or not record.get("metrics")):
        value = live.latest(metric)
        if value is not None:
            return value
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def time_cell(record: dict, live: RunLive | None, now: float | None = None) -> str:
    """'3m12s ~1m05s' (elapsed, then the ETA while it runs), from the run's events when the app
    follows them, else from the record's start and finish times."""
    now = time.time() if now is None else now
    active = record.get("status") in ACTIVE
    elapsed = live.clock.elapsed(now) if live is not None else None
    if elapsed is None:
        started, finished = record.get("started"), record.get("finished")
        if isinstance(started, (int, float)):
            end = finished if isinstance(finished, (int, float)) and not active else now
            elapsed = max(end - started, 0.0)
    if elapsed is None:
        return ""
    text = format_duration(elapsed)
    if active and live is not None:
        eta = live.clock.eta(now)
        if eta is not None:
            text += f" ~{format_duration(eta)}"
    return text


def progress_cell(record: dict, live: RunLive | None) -> str:
    if live is not None and live.phase is not None:
        return live.progress_text()
    if record.get("status") == DONE:
        epochs = (record.get("metrics") or {}).get("epoch")  # a done run's last epoch is its last
        return f"S {epochs}/{epochs}" if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else ""
    return ""


def run_matches(record: dict, needle: str) -> bool:
    """The runs screen's filter: every word must appear in the name, id or status."""
    if not needle:
        return True
    hay = f"{record.get('name', '')} {record.get('id', '')} {record.get('status', '')}".lower()
    return all(word in hay for word in needle.lower().split())
