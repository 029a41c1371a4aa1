"""What the app keeps of each run, independent of any widget (and of Textual).

A run's event stream can grow to hundreds of thousands of lines (one `progress` event per step), so
the app never keeps the events themselves: `RunLive` folds them (kdtui.core.runstate, the fold every
reader shares) into the per-epoch rows the curves and the table show, the current phase and step,
the final event, and the last `LOG_LINES` lines of the log. `compact_events` drops what `RunLive`
would throw away anyway before a batch crosses from the reading thread to the UI thread.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any

from kdtui.core.events import ACTIVE_STATUSES, DONE, Event, Progress
from kdtui.core.record import shown_metrics
from kdtui.core.runstate import RunState, describe
from kdtui.core.timing import format_duration

LOG_LINES = 500
ACTIVE = ACTIVE_STATUSES
# The curves of the live screen (agreement is the headline: docs/metrics.md, "Fidelity").
AGREEMENT = ("train_agreement", "test_agreement")
EPOCH_COLUMNS = ("train_agreement", "test_agreement", "train_agreement_eval", "test_acc", "test_kl",
                 "test_nll", "test_ece", "train_loss", "lr")


def compact_events(events: list[Event]) -> list[Event]:
    """The events of one batch that change what the app shows: every event but `Progress`, of
    which only the last one counts. Order is kept."""
    last_progress = None
    for i in range(len(events) - 1, -1, -1):
        if isinstance(events[i], Progress):
            last_progress = i
            break
    return [e for i, e in enumerate(events) if not isinstance(e, Progress) or i == last_progress]


class RunLive(RunState):
    """One run's stream as the app shows it: the fold of kdtui.core.runstate plus the last
    `LOG_LINES` lines of its log (`progress` is the bar's, not the log's). `log_total` counts the
    lines ever added (a widget that has shown n lines shows the newest `log_total - n` of `log`)."""

    __slots__ = ("run_id", "log", "log_total")

    def __init__(self, run_id: str, log_lines: int = LOG_LINES):
        super().__init__()
        self.run_id = run_id
        self.log: deque[str] = deque(maxlen=log_lines)
        self.log_total = 0

    def feed_one(self, event: Event | dict) -> Event | None:
        event = super().feed_one(event)
        if event is not None and not isinstance(event, Progress):
            self.log.append(describe(event, timed=True))
            self.log_total += 1
        return event


# -- the runs table -------------------------------------------------------------------------------

def record_metric(record: dict, live: RunLive | None, metric: str) -> float | None:
    """A run's latest value of `metric`: the stream's newest epoch while it runs, else the record's
    (a stopped run's: those of its last finished epoch, kdtui.core.record.shown_metrics)."""
    if live is not None and (record.get("status") in ACTIVE or not record.get("metrics")):
        value = live.latest(metric)
        if value is not None:
            return value
    value = shown_metrics(record)[0].get(metric)
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
    last_epoch = shown_metrics(record)[1]  # stopped: its metrics are those of this epoch, the last it finished
    return f"S {last_epoch} last" if last_epoch is not None else ""
