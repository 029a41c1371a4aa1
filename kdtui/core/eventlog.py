"""A run's append-only `events.jsonl`: one JSON object per line, written by the runner, tailed by the
app and `kdtui runs tail`, and the source of the run's per-epoch history.

Every line has `t` (unix time) and `type`; docs/events.md lists the types and their fields. The
readers here hand out typed events (kdtui.core.events.parse); a line that is no event is skipped
and counted. Whether the run has ended is the fold's to say (kdtui.core.runstate.RunState).
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from kdtui.core.events import ACTIVITY_EVENTS, FINAL_EVENTS, BadEvent, EpochMetrics, Event, as_dict, parse
from kdtui.core.runstate import RunState


# -- JSON encoding shared with the registry -------------------------------------------------------

def _default(obj: Any) -> Any:
    """Encode what the engine and runner hand us besides plain JSON types."""
    item = getattr(obj, "item", None)  # numpy / torch scalars, without importing either
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def sanitize(obj: Any) -> Any:
    """A copy with NaN/±inf replaced by None, so the output is strict JSON (jq, other tools)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict, compact JSON. Non-finite floats become null (a NaN loss is reported by a `failed`
    event's message, not by the number)."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_default)
    except ValueError:
        # Rare path: encode the odd types first, then drop the non-finite floats.
        plain = json.loads(json.dumps(obj, default=_default))
        return json.dumps(sanitize(plain), separators=(",", ":"), allow_nan=False)


# -- writing --------------------------------------------------------------------------------------

class EventWriter:
    """Appends events to a run's `events.jsonl`, one line per `write`, flushed to the OS each time.

    The file is opened in append mode, so a resumed run continues the same file. If the previous
    writer died mid-line, a newline is added first so that its partial line stays one (skipped)
    corrupt line instead of swallowing the next event.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: each event is a single write(2) on an O_APPEND descriptor, so lines from
        # two writers (runner and a `stop` from the CLI) never interleave.
        self._file = open(self.path, "ab", buffering=0)
        if self._ends_mid_line():
            self._file.write(b"\n")

    def _ends_mid_line(self) -> bool:
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"

    def write(self, event: Event | dict[str, Any]) -> dict[str, Any]:
        """Append one event (adding `t` if missing) and return the dict as written."""
        event = as_dict(event)
        if "type" not in event:
            raise ValueError(f"an event needs a 'type': {event!r}")
        if "t" not in event:
            event = {"t": time.time(), **event}
        line = (dumps(event) + "\n").encode("utf-8")
        if self._file.closed:
            raise ValueError(f"event log {self.path} is closed")
        self._file.write(line)
        return event

    def sync(self) -> None:
        """fsync the file (the runner does this at the end of a run, not per line)."""
        if not self._file.closed:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            try:
                self.sync()
            except OSError:
                pass
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._file.close()
        except Exception:
            pass


# -- reading --------------------------------------------------------------------------------------

def _type_filter(types: Iterable[str] | None) -> "re.Pattern[bytes] | None":
    if types is None:
        return None
    alternatives = b"|".join(re.escape(json.dumps(t).encode()) for t in types)
    return re.compile(rb'"type"\s*:\s*(?:' + alternatives + rb")")


def _parse_lines(data: bytes, types: Iterable[str] | None = None) -> tuple[list[Event], int]:
    """Parse complete lines; returns (events, number of lines that are no event, skipped)."""
    wanted = set(types) if types is not None else None
    quick = _type_filter(types)
    events: list[Event] = []
    bad = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        if quick is not None and not quick.search(raw):
            continue  # cheap pre-filter: most lines of a long run are `progress`
        try:
            event = parse(raw)
        except BadEvent:
            bad += 1
            continue
        if wanted is not None and event.type not in wanted:
            continue
        events.append(event)
    return events, bad


class EventReader:
    """Tails a growing `events.jsonl` from a byte offset.

    `read_new()` returns the events on complete lines written since the last call; a last line
    without its newline is left for the next call. A missing file reads as empty. Corrupt lines are
    skipped and counted in `skipped`. If the file shrinks (deleted and recreated), reading restarts
    at the beginning.
    """

    def __init__(self, path: str | Path, offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self.skipped = 0

    def read_new(self) -> list[Event]:
        try:
            with _open_log(self.path) as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.offset = 0
                if size == self.offset:
                    return []
                f.seek(self.offset)
                data = f.read(min(size - self.offset, MAX_LOG_BYTES))  # a huge log: a bounded chunk a call
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        complete = data[: end + 1]
        self.offset += len(complete)
        events, bad = _parse_lines(complete)
        self.skipped += bad
        return events


# The most a whole-log read takes in: a long run's log is tens of MiB; more is a damaged or planted
# file (a link to /dev/zero), which must not take the machine's memory with it.
MAX_LOG_BYTES = 256 * 2**20


class EventLogUnreadable(OSError):
    """A log that is not read whole: not a regular file, or over MAX_LOG_BYTES. The message is one
    line naming the file."""


def _open_log(path: str | Path):
    """The log opened for reading if it is a regular file; opened without blocking, so a FIFO planted
    in its place cannot hang the reader (EventLogUnreadable instead)."""
    f = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise EventLogUnreadable(errno.EINVAL, "not a regular file: not read as a run's event log", str(path))
    return f


def _read_bounded(path: str | Path) -> bytes:
    """The bytes of a regular file of at most MAX_LOG_BYTES."""
    with _open_log(path) as f:
        st = os.fstat(f.fileno())
        if st.st_size > MAX_LOG_BYTES:
            raise EventLogUnreadable(errno.EFBIG, f"{st.st_size / 2**20:.0f} MiB, over the {MAX_LOG_BYTES / 2**20:.0f} "
                                                  "MiB an event log is read up to: not read", str(path))
        return f.read(MAX_LOG_BYTES + 1)[:MAX_LOG_BYTES]


def read_all(path: str | Path, types: Iterable[str] | None = None) -> list[Event]:
    """Every event on a complete line of `path` ([] if missing); `types` keeps only those types.
    EventLogUnreadable (an OSError) for a log that is not a regular file or over MAX_LOG_BYTES."""
    try:
        data = _read_bounded(path)
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n")
    events, _ = _parse_lines(data[: end + 1] if end >= 0 else b"", types)
    return events


def history_from_events(events: Iterable[Event | dict]) -> list[dict]:
    """The student's per-epoch metrics as flat dicts `{"epoch": e, **metrics}`, sorted by epoch.

    If a resumed run repeated an epoch, the later event wins.
    """
    state = RunState()
    state.feed(events)
    return state.history()


def read_history(path: str | Path) -> list[dict]:
    """`history_from_events` of the run whose log is `path` (reads only its epoch lines)."""
    return history_from_events(read_all(path, types=(EpochMetrics.type,)))


def final_event(events: Iterable[Event | dict]) -> Event | None:
    """The event that ended the run (Done, Failed, Stopped), or None if it has not ended or was
    resumed after it (RunState applies the rule)."""
    state = RunState()
    state.feed(events)
    return state.final


def read_final(path: str | Path) -> Event | None:
    """`final_event` of the run whose log is `path`, reading only the lines that can end or reopen
    a run (not its log lines)."""
    return final_event(read_all(path, types=_ENDING_TYPES))


_ENDING_TYPES = tuple(cls.type for cls in (*FINAL_EVENTS, *ACTIVITY_EVENTS))


def follow(
    path: str | Path,
    stop_when_final: bool = True,
    poll: float = 0.2,
    *,
    offset: int = 0,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    """Yield events from `path` as they arrive (from `offset`, the start by default).

    With `stop_when_final`, returns after a final event once nothing newer follows it in the file
    (so an old `stopped` before a resume does not end the tail). `stop`, if given, is asked whenever
    there is nothing new; returning True ends the generator (e.g. "the run's process is gone").
    """
    reader = EventReader(path, offset)
    state = RunState()  # says whether the events so far end the run
    while True:
        events = reader.read_new()
        for event in events:
            state.feed_one(event)
            yield event
        if events:
            if stop_when_final and state.final is not None:
                return
            continue  # there may be more already; poll again without sleeping
        if stop is not None and stop():
            # One last read so nothing written just before the stop is lost.
            yield from reader.read_new()
            return
        time.sleep(poll)
