"""Events on read: `parse` (every line typed, an unknown type kept, a bad line refused), the one fold
and its reopen rule (RunState, which the clock, `follow`, reconciliation and the app share), the one
`describe`, and docs/events.md covering every event type the code defines."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from kdtui.core import eventlog
from kdtui.core.events import (
    EVENT_CLASSES,
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
from kdtui.core.runstate import RunState, describe
from kdtui.core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]

ONE_OF_EACH = [
    PhaseStart(TEACHER, index=1, total=3, epochs=4, steps_per_epoch=50, t=10.0),
    Progress(TEACHER, 1, 2, 25, 50, t=11.0),
    EpochMetrics(TEACHER, 1, 2, {"test_acc": 0.75}, t=12.0),
    PhaseEnd(TEACHER, index=1, total=3, metrics={"test_acc": 0.8}, t=13.0),
    Log("teacher cache: hit rate 100%", t=14.0),
    Done({"test_agreement": 0.9, "test_acc": 0.85}, t=15.0),
    Failed("non-finite loss", phase=STUDENT, epoch=3, step=7, t=16.0),
    Stopped("stopped during student epoch 4", t=17.0),
]


# -- parse --------------------------------------------------------------------------------------------

def test_every_event_class_round_trips_through_a_line():
    assert {type(e) for e in ONE_OF_EACH} == set(EVENT_CLASSES)
    for event in ONE_OF_EACH:
        line = json.dumps(event.to_dict())
        assert json.loads(line)["t"] == event.t and json.loads(line)["type"] == event.type
        assert parse(line) == event
        assert parse(line.encode()) == event
        assert parse(json.loads(line)) == event


def test_a_newer_kdtui_adds_fields_and_old_lines_miss_defaults():
    line = {"t": 1, "type": "progress", "phase": "student", "index": 0, "epoch": 2, "step": 3, "steps": 9,
            "gpu_util": 0.97}
    assert parse(line) == Progress(STUDENT, 0, 2, 3, 9, t=1)
    assert parse({"type": "failed", "error": "x"}) == Failed("x", phase="", epoch=-1, step=-1)
    assert parse({"type": "stopped"}) == Stopped("")


def test_an_unknown_type_is_kept_with_every_field():
    line = '{"t": 5.5, "type": "checkpoint_saved", "path": "student.pt", "epoch": 3}'
    event = parse(line)
    assert isinstance(event, UnknownEvent)
    assert event.type == "checkpoint_saved" and event.t == 5.5
    assert event.data == {"path": "student.pt", "epoch": 3}
    assert event.to_dict() == json.loads(line)  # written back as it was read
    assert describe(event) == "checkpoint_saved (unknown event) path=student.pt epoch=3"


@pytest.mark.parametrize("line", [
    '{"t": 1, "type": "log", "mess',       # cut short by a crash
    "[1, 2, 3]", "42", '"done"', "",        # not an object
    '{"t": 1, "message": "no type"}',
    '{"t": 1, "type": ""}',
    '{"t": 1, "type": 7}',
    '{"t": "noon", "type": "log", "message": "x"}',
    '{"t": 1, "type": "progress", "phase": "student"}',  # a known type without its fields
    '{"t": 1, "type": "epoch", "phase": "student", "index": 0, "epoch": true, "metrics": {}}',
    '{"t": 1, "type": "epoch", "phase": "student", "index": 0, "epoch": 1, "metrics": [0.5]}',
    '{"t": 1, "type": "done", "metrics": null}',
    '{"t": 1, "type": "phase_start", "phase": "student", "epochs": 2.5}',
    '{"t": 1, "type": "phase_start", "phase": "student", "reused": "yes"}',
    b'\xff\xfe',
])
def test_a_line_that_is_no_event_is_refused(line):
    with pytest.raises(BadEvent):
        parse(line)


def test_readers_skip_bad_lines_and_keep_unknown_ones(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"t": 1, "type": "log", "message": "a"}\n'
                    '{"t": 2, "type": "progress"}\n'
                    '{"t": 3, "type": "future_thing", "x": [1]}\n'
                    'garbage\n'
                    '{"t": 4, "type": "done", "metrics": {}}\n')
    reader = eventlog.EventReader(path)
    events = reader.read_new()
    assert [e.t for e in events] == [1, 3, 4] and reader.skipped == 2
    assert isinstance(events[1], UnknownEvent) and events[1].data == {"x": [1]}
    assert eventlog.final_event(events) == Done({}, t=4)


# -- the fold and the reopen rule ------------------------------------------------------------------------

def _start(t):
    return PhaseStart(STUDENT, epochs=2, steps_per_epoch=10, t=t)


def _step(t, step):
    return Progress(STUDENT, 0, 1, step, 10, t=t)


# (events, the index of the event that ends the run or None); written out by hand from the rule.
REOPEN_CASES = {
    "done ends it": ([_start(0), _step(1, 5), Done({}, t=2)], 2),
    "a log after the end keeps it ended": ([_start(0), Stopped(t=2), Log("bye", t=3)], 1),
    "an unknown event after the end keeps it ended": ([_start(0), Failed("x", t=2), UnknownEvent("new", {}, t=3)], 1),
    "a phase start after a stop reopens it": ([_start(0), Stopped(t=2), _start(5)], None),
    "a step after a stop reopens it": ([_start(0), Stopped(t=2), _step(5, 1)], None),
    "an epoch after a stop reopens it": ([_start(0), Stopped(t=2), EpochMetrics(STUDENT, 0, 1, {}, t=5)], None),
    "a phase end after a stop reopens it": ([_start(0), Stopped(t=2), PhaseEnd(STUDENT, t=5)], None),
    "resumed, then done": ([_start(0), Stopped(t=2), _start(5), Log("x", t=6), Done({}, t=9)], 4),
    "only log lines: not ended": ([Log("waiting", t=0), Log("running", t=1)], None),
    "nothing yet": ([], None),
}


@pytest.mark.parametrize("case", REOPEN_CASES, ids=str)
def test_the_reopen_rule_is_the_same_for_every_reader(case, tmp_path):
    events, end = REOPEN_CASES[case]
    expected = events[end] if end is not None else None
    state = RunState()
    state.feed(events)
    assert state.final == expected
    assert state.clock.finished == (expected is not None)
    assert eventlog.final_event(events) == expected
    # the same events as the lines of a file: read back, and followed until the run ends
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    assert eventlog.final_event(eventlog.read_all(path)) == expected
    assert eventlog.read_final(path) == expected  # what reconciliation reads
    stop_asked = []
    followed = list(eventlog.follow(path, poll=0.001, stop=lambda: stop_asked.append(1) or True))
    assert followed == events
    assert bool(stop_asked) == (expected is None)  # an ended run is left at once; a live one waits


def test_a_log_line_after_the_end_does_not_restart_the_clock():
    state = RunState()
    state.feed([_start(100.0), _step(104.0, 4), Stopped(t=110.0), Log("results in ...", t=500.0)])
    assert state.clock.finished
    assert state.clock.elapsed(1000.0) == pytest.approx(10.0)  # not 10 + the 500 s after the log line
    state.feed([_start(600.0), _step(601.0, 1)])  # resumed: the clock runs again from the resume
    assert not state.clock.finished
    assert state.clock.elapsed(605.0) == pytest.approx(10.0 + 5.0)


def test_the_fold_of_a_stopped_and_resumed_run():
    state = RunState()
    state.feed([PhaseStart(STUDENT, epochs=3, steps_per_epoch=10, t=0),
                EpochMetrics(STUDENT, 0, 0, {"test_agreement": 0.1}, t=1),
                EpochMetrics(STUDENT, 0, 1, {"test_agreement": 0.4}, t=2),
                _step(3, 4), Stopped("asked", t=4),
                PhaseStart(STUDENT, epochs=3, steps_per_epoch=10, t=10),
                EpochMetrics(STUDENT, 0, 1, {"test_agreement": 0.5}, t=11),  # the repeated epoch wins
                UnknownEvent("future", {"x": 1}, t=12),
                {"t": 13, "type": "progress"},  # a decoded line that is no event: skipped
                EpochMetrics(TEACHER, 0, 1, {"test_acc": 0.9}, t=14)])
    assert state.final is None and state.events_seen == 9 and state.last_t == 14
    assert state.history() == [{"epoch": 0, "test_agreement": 0.1}, {"epoch": 1, "test_agreement": 0.5}]
    assert state.progress_text() == "S 1/3" and state.latest("test_agreement") == 0.5


# -- one description ----------------------------------------------------------------------------------

def test_describe_says_what_each_event_is_in_plain_text():
    lines = [describe(e) for e in ONE_OF_EACH]
    assert lines == [
        "teacher 2/3: start, 4 epochs × 50 steps",
        "teacher 2 epoch 2 step 25/50",
        "teacher 2 epoch 2  test acc 0.750",
        "teacher 2/3: end",
        "teacher cache: hit rate 100%",
        "done  test agr 0.900  test acc 0.850",
        "FAILED (student, epoch 3): non-finite loss",
        "stopped: stopped during student epoch 4",
    ]
    assert describe(Log("[bold]x[/] [@click=app.quit]y")) == "[bold]x[/] [@click=app.quit]y"  # text, not markup
    stamped = describe(ONE_OF_EACH[4], timed=True)
    assert re.fullmatch(r"\d\d:\d\d:\d\d teacher cache: hit rate 100%", stamped)
    assert describe(Log("x"), timed=True) == "--:--:-- x"


def test_the_app_log_screen_live_log_and_progress_line_share_describe(tmp_path):
    from kdtui.cli.progress import RunProgress
    from kdtui.tui.screens.log import log_lines
    from kdtui.tui.state import RunLive
    from rich.console import Console

    ws = Workspace(tmp_path)
    ws.create_run_dir("r1")
    lines = [json.dumps(e.to_dict()) for e in ONE_OF_EACH] + ['{"t": 1, "type": "log", "mess']
    ws.events_path("r1").write_text("\n".join(lines) + "\n")
    shown = log_lines(ws, "r1")
    expected = [describe(e, timed=True) for e in ONE_OF_EACH]
    assert shown == expected + ['{"t": 1, "type": "log", "mess']  # a bad line is shown as it is

    live = RunLive("r1")
    live.feed(eventlog.read_all(ws.events_path("r1")))
    assert list(live.log) == [line for e, line in zip(ONE_OF_EACH, expected) if not isinstance(e, Progress)]

    import io
    display = RunProgress(Console(file=io.StringIO(), width=100), "r1")
    for event in ONE_OF_EACH[:3]:
        display(event.to_dict())
    assert display.latest == describe(ONE_OF_EACH[2])


# -- docs/events.md ------------------------------------------------------------------------------------

EVENT_MODULES = {"kernels.events", "kdtui.core.events"}


def _event_classes_defined_in_code() -> set[str]:
    """Names of every class in kdtui/ and kernels/ that derives from an event class (a base counts
    when its file defines it or imports it from an events module: rich's `Progress` is not ours)."""
    defined: dict[str, set[str]] = {}
    for path in [*(ROOT / "kdtui").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        ours = {a.asname or a.name: a.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module in EVENT_MODULES for a in node.names}
        local = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                parents = {ours.get(b.id, b.id) for b in node.bases if isinstance(b, ast.Name)
                           and (b.id in ours or b.id in local)}
                defined[node.name] = parents
    found, grew = set(), True
    while grew:
        new = {name for name, parents in defined.items() if parents & ({"Event"} | found)} - found
        grew, found = bool(new), found | new
    return found


def test_every_event_class_the_code_defines_is_a_known_type():
    # A new event class must join EVENT_CLASSES (so parse knows it) and docs/events.md.
    assert _event_classes_defined_in_code() == {c.__name__ for c in EVENT_CLASSES} | {UnknownEvent.__name__}


def test_docs_describe_every_event_type_and_its_fields():
    text = (ROOT / "docs" / "events.md").read_text()
    sections = dict(re.findall(r"^### `(\w+)`[^\n]*\n(.*?)(?=^##|\Z)", text, re.M | re.S))
    assert set(sections) == {cls.type for cls in EVENT_CLASSES}
    for cls in EVENT_CLASSES:
        documented = set(re.findall(r"`(\w+)`", sections[cls.type]))
        wanted = {f.name for f in fields(cls) if f.name != "t"}
        assert wanted <= documented, (cls.type, wanted - documented)
    for word in ("reopen", "`log` line after a final event"):
        assert word in text
