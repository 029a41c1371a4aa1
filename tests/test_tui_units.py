"""The app's parts that need no terminal: folding events, the streamer, the editor's field
handling, `kdtui doctor` and `kdtui serve`'s missing-extra message."""
from __future__ import annotations

import builtins
import json
import os
import socket
import time

import pytest

from kdtui.core.registry import RunStore
from kdtui.core.spec import FIELD_PATHS
from kdtui.tui.state import LOG_LINES, RunLive, compact_events, progress_cell, record_metric, run_matches
from kdtui.tui.streaming import EventStreamer, RegistryWatcher
from kdtui.core.workspace import Workspace


def _progress(epoch, step, steps=10, phase="student"):
    return {"t": 1.0, "type": "progress", "phase": phase, "index": 0, "epoch": epoch, "step": step, "steps": steps}


def _epoch(epoch, phase="student", **metrics):
    return {"t": 1.0, "type": "epoch", "phase": phase, "index": 0, "epoch": epoch, "metrics": metrics}


def test_compact_keeps_all_but_the_last_progress_only():
    events = [_progress(1, s) for s in range(1, 6)] + [_epoch(1, test_agreement=0.5)] + \
             [_progress(2, s) for s in range(1, 4)] + [{"t": 1.0, "type": "log", "message": "x"}]
    out = compact_events(events)
    assert [e["type"] for e in out] == ["epoch", "progress", "log"]
    assert out[1]["step"] == 3


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
    assert live.final["type"] == "stopped"
    live.feed([_progress(4, 1)])  # resumed: the final event no longer counts
    assert live.final is None
    live.feed([_epoch(3, test_agreement=0.9)])  # a repeated epoch replaces the old row
    assert len(live.student_rows()) == 3 and live.latest("test_agreement") == 0.9


def test_runs_table_cells():
    record = {"id": "a", "name": "kd[seed=1]", "status": "done", "metrics": {"test_agreement": 0.8},
              "spec": {"student": {"epochs": 7}}}
    assert progress_cell(record, None) == "S 7/7"
    assert record_metric(record, None, "test_agreement") == 0.8
    live = RunLive("a")
    live.feed([_epoch(1, test_agreement=0.3)])
    running = {**record, "status": "running"}
    assert record_metric(running, live, "test_agreement") == 0.3  # the stream wins while it runs
    assert run_matches(record, "seed=1 done") and not run_matches(record, "failed")


def test_streamer_continues_from_its_offset(tmp_path):
    ws = Workspace(tmp_path)
    ws.create_run_dir("r1")
    path = ws.events_path("r1")
    path.write_text("".join(json.dumps(_progress(1, s)) + "\n" for s in range(1, 6)))
    streamer = EventStreamer(ws)
    streamer.want("r1", "active")
    batch = streamer.poll()
    assert [e["step"] for e in batch["r1"]] == [5]
    streamer.unwant("r1", "active")
    with open(path, "a") as f:
        f.write(json.dumps(_epoch(1, test_agreement=0.5)) + "\n")
    assert [e["type"] for e in streamer.poll()["r1"]] == ["epoch"]  # the drain after unwant
    assert streamer.poll() == {} and streamer.followed() == set()
    with open(path, "a") as f:
        f.write(json.dumps({"type": "done", "t": 2.0}) + "\n")
    streamer.want("r1", "live")
    assert [e["type"] for e in streamer.poll()["r1"]] == ["done"]  # nothing read twice


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
    records = watcher.poll(None)  # the first read through a store reconciles already
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
    from kdtui.doctor import doctor_report, render_report

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
    import kdtui.doctor as doctor

    class Done:
        stdout = "500\n"
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/tmux")
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: Done())
    rows = doctor._tmux_lines({"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "tmux-256color"})
    assert ("tmux escape-time", "500 ms") in rows[0]
    assert any("set -sg escape-time 10" in hint for hint in rows[1])


def test_serve_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    from kdtui.serve import ServeUnavailable, serve, serve_command

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
