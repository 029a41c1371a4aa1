"""The app's parts that need no terminal: folding events, the streamer, the editor's field
handling, `kdtui doctor` and `kdtui serve`'s missing-extra message."""
from __future__ import annotations

import builtins
import json
import os
import socket
import time

import pytest

from kdtui.core.events import STUDENT, Done, EpochMetrics, Log, Progress, Stopped
from kdtui.core.registry import RunStore
from kdtui.core.runstate import RunState
from kdtui.core.spec import FIELD_PATHS
from kdtui.tui.state import LOG_LINES, RunLive, compact_events, progress_cell, record_metric
from kdtui.tui.streaming import EventStreamer, RegistryWatcher
from kdtui.core.workspace import Workspace


def _progress(epoch, step, steps=10, phase=STUDENT):
    return Progress(phase, 0, epoch, step, steps, t=1.0)


def _epoch(epoch, phase=STUDENT, **metrics):
    return EpochMetrics(phase, 0, epoch, metrics, t=1.0)


def test_compact_keeps_all_but_the_last_progress_only():
    events = [_progress(1, s) for s in range(1, 6)] + [_epoch(1, test_agreement=0.5)] + \
             [_progress(2, s) for s in range(1, 4)] + [Log("x", t=1.0)]
    out = compact_events(events)
    assert [type(e) for e in out] == [EpochMetrics, Progress, Log]
    assert out[1].step == 3


def test_run_live_folds_a_run_and_stays_bounded():
    live = RunLive("r")
    live.feed([{"t": 1.0, "type": "phase_start", "phase": "teacher", "index": 0, "total": 2, "epochs": 3,
                "steps_per_epoch": 10, "reused": False}, _progress(1, 4, phase="teacher")])
    assert live.progress_text() == "T1 1/3" and live.phase_text() == "teacher 1/2"
    assert live.fraction() == (4.0, 30.0)
    live.feed([{"t": 1.0, "type": "phase_start", "phase": "student", "index": 0, "total": 1, "epochs": 5,
                "steps_per_epoch": 10, "reused": False}])
    for epoch in range(1, 4):
        live.feed([_progress(epoch, s) for s in range(1, 11)])
        live.feed([_epoch(epoch, train_agreement=0.1 * epoch, test_agreement=0.2 * epoch, test_kl=1.0 / epoch)])
    assert live.progress_text() == "S 3/5" and live.fraction() == (30.0, 50.0)
    assert live.series("test_agreement") == ([1, 2, 3], [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.6)])
    assert live.latest("train_agreement") == pytest.approx(0.3)
    live.feed([{"t": 1.0, "type": "log", "message": f"m{i}"} for i in range(5 * LOG_LINES)])
    assert len(live.log) == LOG_LINES and live.log_total == 2 + 3 + 5 * LOG_LINES
    live.feed([{"t": 1.0, "type": "stopped", "message": "asked to"}])
    assert live.final == Stopped("asked to", t=1.0)
    live.feed([_progress(4, 1)])  # resumed: the final event no longer counts
    assert live.final is None
    live.feed([_epoch(3, test_agreement=0.9)])  # a repeated epoch replaces the old row
    assert len(live.student_rows()) == 3 and live.latest("test_agreement") == 0.9


def test_runs_table_cells():
    # An index row: no spec; a done run's final metrics name its last epoch.
    record = {"id": "a", "name": "kd[seed=1]", "status": "done", "metrics": {"test_agreement": 0.8, "epoch": 7}}
    assert progress_cell(record, None) == "S 7/7"
    for odd in (0.5, "7", None, True, -1):  # not an epoch count: nothing rather than a wrong one
        assert progress_cell({**record, "metrics": {"epoch": odd}}, None) == ""
    assert record_metric(record, None, "test_agreement") == 0.8
    live = RunLive("a")
    live.feed([_epoch(1, test_agreement=0.3)])
    running = {**record, "status": "running"}
    assert record_metric(running, live, "test_agreement") == 0.3  # the stream wins while it runs


def test_streamer_continues_from_its_offset(tmp_path):
    ws = Workspace(tmp_path)
    ws.create_run_dir("r1")
    path = ws.events_path("r1")
    path.write_text("".join(json.dumps(_progress(1, s).to_dict()) + "\n" for s in range(1, 6)))
    streamer = EventStreamer(ws)
    streamer.want("r1", "active")
    batch = streamer.poll()
    assert [e.step for e in batch["r1"]] == [5]
    streamer.unwant("r1", "active")
    with open(path, "a") as f:
        f.write(json.dumps(_epoch(1, test_agreement=0.5).to_dict()) + "\n")
    assert [type(e) for e in streamer.poll()["r1"]] == [EpochMetrics]  # the drain after unwant
    assert streamer.poll() == {} and streamer.followed() == set()
    with open(path, "a") as f:
        f.write(json.dumps({"type": "done", "t": 2.0}) + "\n")
    streamer.want("r1", "live")
    assert streamer.poll()["r1"] == [Done(t=2.0)]  # nothing read twice


def test_registry_watcher_rereads_only_on_change(tmp_path):
    ws = Workspace(tmp_path)
    store = RunStore(ws)
    store.add({"id": "a", "name": "a", "status": "done"})
    watcher = RegistryWatcher(ws)
    records = watcher.poll(None)
    assert [r["id"] for r in records] == ["a"]
    assert watcher.poll(records) is None
    store.add({"id": "b", "name": "b", "status": "done"})
    assert [r["id"] for r in watcher.poll(records)] == ["a", "b"]


def test_registry_watcher_settles_a_dead_run(tmp_path):
    ws = Workspace(tmp_path)
    ws.create_run_dir("gone")
    RunStore(ws).add({"id": "gone", "name": "g", "status": "running", "pid": 2 ** 22 + 12345,
                      "host": socket.gethostname(), "started": time.time()})
    watcher = RegistryWatcher(ws)
    records = watcher.poll(None)  # the app's first refresh settles stale runs
    assert records[0]["status"] == "interrupted"


def test_editor_fields_cover_the_spec():
    from kdtui.tui.screens.editor import field_kind, form_fields, parse_field, set_path, show_value

    assert set(FIELD_PATHS) <= set(form_fields())
    kinds = {path: field_kind(path) for path in form_fields()}
    assert kinds["teacher.model"] == "enum" and kinds["data.download"] == "bool"
    assert kinds["teacher.augment"] == "list" and kinds["teacher.lr"] == "number" and kinds["name"] == "str"
    assert parse_field("list", "crop, hflip") == ["crop", "hflip"]
    assert parse_field("list", "[0, 1]") == [0, 1]
    assert parse_field("number", "1e-4") == 1e-4 and parse_field("number", "abc") == "abc"
    assert parse_field("number", "") is None and parse_field("str", "42") == "42"
    assert show_value([0, 1]) == "0, 1" and show_value(False) == "false"
    data = {"teacher": {"epochs": 2}}
    set_path(data, "teacher.epochs", None)
    assert data == {}
    set_path(data, "distill.temperature", 2.0)
    assert data == {"distill": {"temperature": 2.0}}


def test_doctor_report_rows(tmp_path):
    from kdtui.cli.doctor import doctor_report, render_report

    RunStore(Workspace(tmp_path)).add({"id": "a", "name": "a", "status": "done"})
    env = {"TERM": "xterm-256color", "SSH_CONNECTION": "10.0.0.1 5000 10.0.0.2 22", "PATH": os.environ.get("PATH", "")}
    rows = doctor_report(str(tmp_path), env=env)
    labels = [label for label, _ in rows]
    for label in ("torch", "CUDA devices", "TERM", "COLORTERM", "colour system", "workspace", "runs"):
        assert label in labels
    values = dict(rows)
    assert values["runs"].startswith("1") and values["workspace"] == str(tmp_path)
    assert any(label == "hint" and "COLORTERM" in value for label, value in rows)
    assert render_report(rows).row_count == len(rows)
    no_color = dict(doctor_report(str(tmp_path), env={**env, "NO_COLOR": "1", "COLORTERM": "truecolor"}))
    assert "NO_COLOR" in no_color


def test_doctor_tmux_escape_time_hint(tmp_path, monkeypatch):
    import kdtui.cli.doctor as doctor

    class Done:
        stdout = "500\n"
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/tmux")
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: Done())
    rows = doctor._tmux_lines({"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "tmux-256color"})
    assert ("tmux escape-time", "500 ms") in rows[0]
    assert any("set -sg escape-time 10" in hint for hint in rows[1])


def test_serve_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    from kdtui.cli.serve import ServeUnavailable, serve, serve_command

    real_import = builtins.__import__

    def no_textual_serve(name, *args, **kwargs):
        if name.startswith("textual_serve"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_textual_serve)
    with pytest.raises(ServeUnavailable) as info:
        serve(str(tmp_path))
    assert "install kdtui[serve]" in str(info.value) and "\n" not in str(info.value)
    assert "--workspace" in serve_command(str(tmp_path))


# -- labels, vocabulary, timing: pure functions the screens use -------------------------------------

def _rec(run_id, name, **spec):
    base = {"seed": 0, "data": {"dataset": "digits"}, "distill": {"temperature": 4.0, "loss": "kl"},
            "student": {"init_lambda": 0.0}}
    for key, value in spec.items():
        node = base
        *parts, leaf = key.split("__")
        for part in parts:
            node = node.setdefault(part, {})
        node[leaf] = value
    return {"id": run_id, "name": name, "spec": base}


def test_run_labels_name_what_differs_with_short_names():
    from kdtui.analysis.labels import run_labels

    records = [_rec("261129-185038-b09d", "kd[distill.temperature=1,seed=0]", distill__temperature=1.0),
               _rec("261129-185038-c0fe", "kd[distill.temperature=4,seed=2]", seed=2),
               _rec("261129-185038-d00d", "kd[distill.temperature=4,seed=0]")]
    assert run_labels(records) == {"261129-185038-b09d": "seed=0, τ=1", "261129-185038-c0fe": "seed=2, τ=4",
                                   "261129-185038-d00d": "seed=0, τ=4"}
    lam = [_rec(f"x-{i}", f"e7[student.init_lambda={v}]", student__init_lambda=v) for i, v in enumerate((0.0, 0.25))]
    assert list(run_labels(lam).values()) == ["λ=0", "λ=0.25"]
    loss = [_rec("a-1", "kd", distill__loss="kl"), _rec("a-2", "kd", distill__loss="reverse-kl")]
    assert list(run_labels(loss).values()) == ["loss=kl", "loss=reverse-kl"]
    # an unknown key falls back to its last path segment
    other = [_rec("b-1", "kd", distill__mystery=1), _rec("b-2", "kd", distill__mystery=2)]
    assert list(run_labels(other).values()) == ["mystery=1", "mystery=2"]


def test_run_labels_fall_back_to_names_then_ids():
    from kdtui.analysis.labels import cut_middle, run_labels

    # many keys differ (different experiments): the names say it better
    a = _rec("r-aaaa", "e1-data-size-tiny", seed=1, distill__temperature=1.0, distill__loss="brier",
             student__init_lambda=0.5)
    b = _rec("r-bbbb", "e7-interpolation-tiny")
    assert run_labels([a, b]) == {"r-aaaa": "e1-data-size-tiny", "r-bbbb": "e7-interpolation-tiny"}
    # identical specs with different names: the names
    assert run_labels([_rec("r-1", "first"), _rec("r-2", "second")]) == {"r-1": "first", "r-2": "second"}
    # identical specs and names (replicates): the short id keeps them apart
    assert run_labels([_rec("r-1111", "kd"), _rec("r-2222", "kd")]) == {"r-1111": "kd #1111", "r-2222": "kd #2222"}
    assert run_labels([_rec("r-1", "solo")]) == {"r-1": "solo"}
    assert cut_middle("kd[distill.temperature=4]", 12) == "kd[dis…re=4]" and cut_middle("short", 12) == "short"


def test_group_stats_count_distinct_seeds_only():
    # The app's by-group cells are kdtui.analysis.compare.mean_std, the one rule for every mean ± std.
    from kdtui.analysis.compare import mean_std

    one = mean_std([0.6228], seeds=[0])
    assert one.std is None and one.format() == "0.6228"  # a group of one: its value, no "± 0.0000"
    same_seed = mean_std([0.5, 0.7], seeds=[0, 0])
    assert (same_seed.n, same_seed.runs, same_seed.std) == (1, 2, None)
    assert same_seed.format() == "0.6000 †"  # flagged: two runs, one seed
    mixed = mean_std([0.5, 0.7, 0.8, None], seeds=[0, 0, 1, 2])
    assert (mixed.n, mixed.runs) == (2, 3) and mixed.mean == pytest.approx(0.7)
    assert mixed.std == pytest.approx(0.1414, abs=1e-4) and mixed.format().endswith("†")
    assert mean_std([None], seeds=[0]) is None


def test_one_vocabulary():
    from kdtui.core.vocabulary import metric_label, teacher_label, teacher_short
    from kdtui.tui.state import EPOCH_COLUMNS

    assert [metric_label(m) for m in ("train_agreement", "train_agreement_eval", "test_agreement", "test_kl",
                                      "test_acc", "teacher_test_acc")] == \
        ["train agr", "clean train agr", "test agr", "test KL", "test acc", "teacher acc"]
    assert len({metric_label(m) for m in EPOCH_COLUMNS}) == len(EPOCH_COLUMNS)
    assert teacher_label(0, 2) == "teacher 1/2" and teacher_short(1) == "T2"


def _clock_events():
    """Two teacher members (10 steps each at 0.5 s), then a student (2 epochs x 10 steps at 0.1 s)."""
    events, t = [], 100.0
    for index in range(2):
        events.append({"t": t, "type": "phase_start", "phase": "teacher", "index": index, "total": 2,
                       "epochs": 1, "steps_per_epoch": 10, "reused": False})
        for step in range(1, 11):
            t += 0.5
            events.append({"t": t, "type": "progress", "phase": "teacher", "index": index, "epoch": 1,
                           "step": step, "steps": 10})
        events.append({"t": t, "type": "phase_end", "phase": "teacher", "index": index})
    events.append({"t": t, "type": "phase_start", "phase": "student", "index": 0, "total": 1, "epochs": 2,
                   "steps_per_epoch": 10, "reused": False})
    for epoch in (1, 2):
        for step in range(1, 11):
            t += 0.1
            events.append({"t": t, "type": "progress", "phase": "student", "index": 0, "epoch": epoch,
                           "step": step, "steps": 10})
    events.append({"t": t, "type": "done"})
    return events


def test_run_clock_measures_phase_by_phase():
    events = _clock_events()
    state = RunState()
    clock = state.clock
    assert clock.elapsed(0.0) is None and clock.eta(0.0) is None
    state.feed(events[:6])  # teacher 1, 5 steps in (at t=102.5)
    assert clock.elapsed(102.5) == pytest.approx(2.5)
    assert clock.phase_eta(102.5) == pytest.approx(2.5)  # 5 steps left at 0.5 s
    assert clock.eta(102.5) is None  # the student's pace is not known yet: no guess
    state.feed(events[6:])
    assert clock.finished and clock.eta(999.0) == 0.0
    assert clock.elapsed(999.0) == pytest.approx(10.0 + 2.0)

    # the student half-way: the rest of the student at its own pace (0.1 s a step)
    state = RunState()
    clock = state.clock
    half = next(i for i, e in enumerate(events) if e.get("phase") == "student" and e.get("epoch") == 2
                and e.get("step") == 1)
    state.feed(events[:half])
    now = events[half - 1]["t"]
    assert clock.eta(now) == pytest.approx(1.0)
    assert clock.eta(now + 0.4) == pytest.approx(0.6)  # time goes on between events


def test_run_clock_teachers_to_come_and_reused_teachers():
    from kdtui.core.timing import format_duration

    events = _clock_events()
    # A resumed run: the student pace is known from before, teacher 2 is still to come.
    state = RunState(teachers=2)
    clock = state.clock
    state.feed([{"t": 0.0, "type": "phase_start", "phase": "student", "index": 0, "epochs": 1,
                 "steps_per_epoch": 10},
                {"t": 0.0, "type": "progress", "phase": "student", "index": 0, "epoch": 1, "step": 1, "steps": 10},
                {"t": 1.0, "type": "progress", "phase": "student", "index": 0, "epoch": 1, "step": 11, "steps": 10},
                {"t": 1.0, "type": "stopped"}])
    assert clock.finished and clock.elapsed(50.0) == pytest.approx(1.0)
    state.feed(events[:3])  # teacher 1 of 2 again, 2 steps in (0.5 s each), after the stop
    assert not clock.finished
    # teacher 1: 8 steps left, teacher 2: 10 steps, at 0.5 s; then the student: 10 steps at 0.1 s
    assert clock.eta(101.0) == pytest.approx(8 * 0.5 + 10 * 0.5 + 10 * 0.1)
    assert clock.elapsed(101.0) == pytest.approx(1.0 + 1.0)  # the time it lay stopped does not count
    reused = RunState()
    reused.feed([{"t": 5.0, "type": "phase_start", "phase": "teacher", "index": 0, "total": 1, "epochs": 3,
                  "steps_per_epoch": 10, "reused": True}])
    assert reused.clock.phase_eta(6.0) == 0.0
    assert [format_duration(s) for s in (None, 4.4, 65, 3 * 3600 + 7 * 60, 2 * 86400 + 4 * 3600)] == \
        ["—", "4s", "1m05s", "3h07m", "2d04h"]


def test_curve_axes_are_sane_with_zero_or_one_point():
    from kdtui.tui.widgets.curves import x_limits

    assert x_limits([]) == (0.0, 1.0)
    assert x_limits([("a", [0], [0.5])]) == (0.0, 1.0)   # not plotext's -1 .. 1
    assert x_limits([("a", [3], [0.5])]) == (2.5, 3.5)
    assert x_limits([("a", [0, 1, 2], [0.1, 0.2, 0.3]), ("b", [], [])]) == (0.0, 2.0)
