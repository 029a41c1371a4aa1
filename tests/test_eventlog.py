"""events.jsonl: writing, tailing from an offset, corrupt lines, history, follow(); readers hand out
typed events (kdtui.core.events)."""
from __future__ import annotations

import json
import threading
import time

from kdtui.core.eventlog import (
    EventReader,
    EventWriter,
    final_event,
    follow,
    history_from_events,
    read_all,
    read_history,
)
from kdtui.core.events import Done, EpochMetrics, Log, PhaseStart, Stopped


def test_write_then_read(tmp_path):
    path = tmp_path / "run" / "events.jsonl"
    with EventWriter(path) as w:
        w.write({"type": "phase_start", "phase": "student", "index": 0, "total": 1,
                 "epochs": 2, "steps_per_epoch": 10, "reused": False})
        w.write({"type": "epoch", "phase": "student", "index": 0, "epoch": 1,
                 "metrics": {"test_agreement": 0.5, "train_loss": float("nan")}})
        w.write({"type": "done", "metrics": {"test_agreement": 0.5}, "t": 123.0})
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        json.loads(line)  # strict JSON: NaN became null
    events = read_all(path)
    assert [type(e) for e in events] == [PhaseStart, EpochMetrics, Done]
    assert all(isinstance(e.t, float) for e in events)
    assert events[2].t == 123.0  # a given t is kept
    assert events[1].metrics["train_loss"] is None
    assert events[0] == PhaseStart("student", index=0, total=1, epochs=2, steps_per_epoch=10, t=events[0].t)
    assert final_event(events) is events[2]
    assert read_all(path, types=[EpochMetrics.type]) == [events[1]]
    assert read_history(path) == [{"epoch": 1, "test_agreement": 0.5, "train_loss": None}]
    assert read_all(tmp_path / "missing.jsonl") == []

    # Append mode: a resumed run continues the same file.
    with EventWriter(path) as w:
        w.write(Log("again"))  # a typed event is written as its dict
    assert read_all(path)[3] == Log("again", t=read_all(path)[3].t)


def test_tail_from_offset_with_partial_line(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read_new() == []  # missing file
    assert reader.offset == 0

    first = json.dumps({"t": 1.0, "type": "log", "message": "one"}) + "\n"
    second = json.dumps({"t": 2.0, "type": "log", "message": "two"}) + "\n"
    with open(path, "w") as f:
        f.write(first + second[:10])  # the second line is half written
    events = reader.read_new()
    assert [e.message for e in events] == ["one"]
    assert reader.offset == len(first.encode())
    assert reader.read_new() == []  # still partial

    with open(path, "a") as f:
        f.write(second[10:])
    assert [e.message for e in reader.read_new()] == ["two"]
    assert reader.offset == path.stat().st_size

    # A reader can start at a saved offset.
    with EventWriter(path) as w:
        w.write({"type": "log", "message": "three"})
    later = EventReader(path, offset=reader.offset)
    assert [e.message for e in later.read_new()] == ["three"]


def test_corrupt_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"t": 1, "type": "log", "message": "ok"}\n'
        '{"t": 2, "type": "log", "mess\n'  # truncated by a crash, then a newline from the next writer
        '[1, 2, 3]\n'
        '\n'
        '{"t": 3, "type": "progress", "phase": "student"}\n'  # a known type without its fields
        '{"t": 4, "type": "done", "metrics": {}}\n'
    )
    reader = EventReader(path)
    events = reader.read_new()
    assert [e.t for e in events] == [1, 4]
    assert reader.skipped == 3
    assert [e.t for e in read_all(path)] == [1, 4]


def test_writer_after_crash_mid_line_starts_a_new_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"t": 1, "type": "log", "message": "ok"}\n{"t": 2, "type": "ep')
    with EventWriter(path) as w:
        w.write({"type": "stopped", "epoch": 3})
    events = read_all(path)
    assert [type(e) for e in events] == [Log, Stopped]


def test_history_from_events_later_epoch_wins():
    events = [
        {"t": 0, "type": "epoch", "phase": "teacher", "index": 0, "epoch": 1, "metrics": {"test_acc": 0.9}},
        {"t": 1, "type": "epoch", "phase": "student", "index": 0, "epoch": 0, "metrics": {"test_agreement": 0.1}},
        {"t": 2, "type": "epoch", "phase": "student", "index": 0, "epoch": 1, "metrics": {"test_agreement": 0.5}},
        {"t": 3, "type": "epoch", "phase": "student", "index": 0, "epoch": 2, "metrics": {"test_agreement": 0.6}},
        {"t": 4, "type": "progress", "phase": "student", "index": 0, "epoch": 3, "step": 1, "steps": 9},
        # resumed from the epoch-1 checkpoint: epoch 2 is repeated
        {"t": 5, "type": "epoch", "phase": "student", "index": 0, "epoch": 2, "metrics": {"test_agreement": 0.7}},
        {"t": 6, "type": "epoch", "phase": "student", "index": 0, "epoch": 3, "metrics": {"test_agreement": 0.8}},
    ]
    history = history_from_events(events)
    assert history == [
        {"epoch": 0, "test_agreement": 0.1},
        {"epoch": 1, "test_agreement": 0.5},
        {"epoch": 2, "test_agreement": 0.7},
        {"epoch": 3, "test_agreement": 0.8},
    ]
    assert history_from_events([]) == []


def test_final_event_ignores_a_stop_that_was_resumed():
    stopped = Stopped("asked to", t=1)
    assert final_event([stopped]) == stopped
    assert final_event([stopped, Log("bye", t=2)]) == stopped
    resumed = [stopped, PhaseStart("student", t=3)]
    assert final_event(resumed) is None
    done = Done({"test_agreement": 0.9}, t=4)
    assert final_event(resumed + [done]) == done
    assert final_event([{"t": 1, "type": "stopped"}]) == Stopped(t=1)  # decoded lines are parsed
    assert final_event([]) is None


def test_follow_stops_at_final_event(tmp_path):
    path = tmp_path / "events.jsonl"

    def run():
        with EventWriter(path) as w:
            w.write({"type": "stopped", "epoch": 0})  # an old stop, followed by a resume
            w.write({"type": "phase_start", "phase": "student", "index": 0, "total": 1,
                     "epochs": 3, "steps_per_epoch": 1, "reused": False})
            for epoch in range(1, 4):
                time.sleep(0.02)
                w.write({"type": "epoch", "phase": "student", "index": 0, "epoch": epoch,
                         "metrics": {"test_agreement": epoch / 10}})
            w.write({"type": "done", "metrics": {"test_agreement": 0.3}})
            time.sleep(0.3)
            w.write({"type": "log", "message": "written after the tail stopped"})

    writer = threading.Thread(target=run)
    started = time.monotonic()
    writer.start()
    seen = [type(e) for e in follow(path, poll=0.01)]
    writer.join()
    assert seen[-1] is Done
    assert seen.count(EpochMetrics) == 3
    assert Log not in seen
    assert time.monotonic() - started < 5


def test_follow_stop_callback_ends_a_dead_run(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write({"type": "phase_start", "phase": "student"})
    polls = []

    def gone() -> bool:
        polls.append(1)
        return len(polls) >= 3

    events = list(follow(path, poll=0.01, stop=gone))
    assert [type(e) for e in events] == [PhaseStart]


def test_a_fifo_in_place_of_the_log_is_refused_not_waited_on(tmp_path):
    """A FIFO planted as events.jsonl: opening it for reading would wait for a writer forever (the
    app's streaming thread with it); the reader refuses it as not a regular file instead."""
    import os
    import threading

    from kdtui.core.eventlog import EventLogUnreadable, read_all

    path = tmp_path / "events.jsonl"
    os.mkfifo(path)
    outcomes = []

    def read():
        for attempt in (lambda: EventReader(path).read_new(), lambda: read_all(path)):
            try:
                attempt()
                outcomes.append("read")
            except EventLogUnreadable as e:
                outcomes.append(str(e))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "the reader is blocked on the FIFO"
    assert len(outcomes) == 2 and all("not a regular file" in o and str(path) in o for o in outcomes)
