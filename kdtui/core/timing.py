"""How long a run has been going and how long it has left, from its own events.

`RunClock` is advanced by a run's events in order (through kdtui.core.runstate.RunState, which
the app, the progress display and `runs tail` share) and measures the time per step phase by phase (each teacher member, then the student). The time
left is the steps left in the current phase at that phase's measured pace, plus the phases still
to come: the remaining teacher members at the teachers' pace (a member reused from the teacher
store takes no time), the student at the student's pace. A phase whose kind has no measured step
yet has no estimate, and neither has the run: a guess from another kind of phase (a different
model, batch size and data) would be a wrong number shown with confidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from kdtui.core.events import STUDENT, TEACHER, Event, PhaseEnd, PhaseStart, Progress


@dataclass
class _Phase:
    kind: str
    index: int
    epochs: int
    steps_per_epoch: int
    reused: bool
    anchor: tuple[float, int] | None = None   # (time, steps done) of the first step seen
    latest: tuple[float, int] | None = None   # (time, steps done) of the newest step seen
    ended: bool = False

    @property
    def total_steps(self) -> int:
        return max(self.epochs, 0) * max(self.steps_per_epoch, 0)

    def step_time(self) -> float | None:
        if self.anchor is None or self.latest is None or self.latest[1] <= self.anchor[1]:
            return None
        return (self.latest[0] - self.anchor[0]) / (self.latest[1] - self.anchor[1])


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RunClock:
    """Elapsed time and ETA of one run, advanced by the fold of its events (kdtui.core.runstate),
    which decides whether the run has ended. `teachers` (the spec's `teacher.members`) lets the
    clock count teacher phases that have not started; without it the last phase_start's `total` is
    used.

    Elapsed time counts only while the run is going: a stopped run that was resumed does not count
    the time it lay stopped.
    """

    def __init__(self, teachers: int | None = None):
        self.teachers = teachers
        self.phases: list[_Phase] = []
        self.teacher_total: int | None = teachers
        self._segments = 0.0                 # closed stretches of activity, in seconds
        self._open: float | None = None      # start of the stretch going on now
        self.finished = False

    def advance(self, event: Event, ended: bool) -> None:
        """Take the next event; `ended`: whether the run has ended once it is taken."""
        t = event.t
        if not _number(t):
            return
        if ended:
            if self._open is not None:   # the final event closes the stretch going on
                self._segments += max(t - self._open, 0.0)
                self._open = None
            self.finished = True
            return
        if self._open is None:
            self._open = t                   # the first event, or the first after a resume
            self.finished = False
        if isinstance(event, PhaseStart):
            phase = _Phase(kind=event.phase or STUDENT, index=event.index, epochs=event.epochs,
                           steps_per_epoch=event.steps_per_epoch, reused=event.reused)
            if phase.kind == TEACHER and self.teachers is None:
                self.teacher_total = event.total
            # A resumed run starts its phase again: the newest start replaces the old one.
            self.phases = [p for p in self.phases if (p.kind, p.index) != (phase.kind, phase.index)]
            self.phases.append(phase)
        elif isinstance(event, Progress):
            phase = self._current()
            if phase is None or phase.kind != (event.phase or STUDENT):
                return
            spe = event.steps or phase.steps_per_epoch or 0
            done = max(event.epoch - 1, 0) * spe + event.step
            if phase.anchor is None or done < phase.anchor[1]:
                phase.anchor = (t, done)
            phase.latest = (t, done)
        elif isinstance(event, PhaseEnd):
            phase = self._current()
            if phase is not None:
                phase.ended = True

    def _current(self) -> _Phase | None:
        return self.phases[-1] if self.phases else None

    # -- answers ---------------------------------------------------------------------------------

    def elapsed(self, now: float) -> float | None:
        """Seconds the run has been going (None before its first event)."""
        if self._open is None:
            return self._segments if self.finished or self._segments else None
        return self._segments + max(now - self._open, 0.0)

    def _pace(self, kind: str) -> float | None:
        """Seconds per step of phases of this kind: the newest one that measured any."""
        for phase in reversed(self.phases):
            if phase.kind == kind and not phase.reused:
                pace = phase.step_time()
                if pace is not None:
                    return pace
        return None

    def phase_eta(self, now: float) -> float | None:
        """Seconds left in the phase going on now."""
        phase = self._current()
        if phase is None or self.finished:
            return None
        if phase.reused or phase.ended:
            return 0.0
        pace = phase.step_time() or self._pace(phase.kind)
        if pace is None:
            return None
        done = phase.latest[1] if phase.latest else 0
        since = now - phase.latest[0] if phase.latest else 0.0
        return max((phase.total_steps - done) * pace - max(since, 0.0), 0.0)

    def eta(self, now: float) -> float | None:
        """Seconds left in the whole run; None when some phase still to come cannot be estimated."""
        if self.finished:
            return 0.0
        current = self._current()
        if current is None:
            return None
        left = self.phase_eta(now)
        if left is None:
            return None
        teachers = [p for p in self.phases if p.kind == TEACHER]
        if current.kind == TEACHER:
            total = self.teacher_total or (current.index + 1)
            to_come = max(total - len(teachers), 0)
            if to_come:
                pace = self._pace(TEACHER)
                if pace is None:
                    return None
                left += to_come * current.total_steps * pace
            # The student's phase comes last; its length and pace are known only from an earlier
            # start (a resumed run), never from the teachers'.
            student = next((p for p in self.phases if p.kind == STUDENT), None)
            student_pace = self._pace(STUDENT)
            if student is None or student_pace is None:
                return None
            left += student.total_steps * student_pace
        return left


def format_duration(seconds: float | None) -> str:
    """'45s', '12m05s', '3h07m', '2d04h'; '—' for None."""
    if seconds is None or math.isnan(seconds):
        return "—"
    seconds = round(max(seconds, 0.0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
