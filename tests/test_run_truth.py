"""Run folders are the truth and the registry is their index: what happens when the registry or the
workspace is missing, damaged or unusable, and when a checkpoint is damaged. Every case goes
through the real `kdtui` script, with real TinyDB files and real (tiny, digits) runs."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cli_helpers import (events, json_out, kdtui, record, run_folders, start_kdtui, store, student_epochs_seen,
                         tiny_spec, wait_for, write)

# Long enough (8 student epochs of 45 steps) that the registry can be deleted while it trains.
LONG_EPOCHS = 8


def one_error_line(result) -> str:
    """The single `error: ...` line a bad input gets, with no traceback anywhere."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("specs")
    write(folder / "tiny.toml", tiny_spec("tiny"))
    write(folder / "long.toml", tiny_spec("long", student_epochs=LONG_EPOCHS, student_batch=32))
    return folder


# -- a registry lost while a run goes ----------------------------------------------------------------

@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_run_puts_back_the_record_its_registry_lost(tmp_path, specs, loss):
    ws = tmp_path / "ws"
    proc = start_kdtui("run", specs / "long.toml", "--workspace", ws, "--json", log_dir=tmp_path, name="run")
    try:
        run_id = wait_for(lambda: (run_folders(ws) or [None])[0], what="the run folder")
        wait_for(lambda: student_epochs_seen(ws, run_id), what="the student phase")
        registry = ws / "kdtui.json"
        if loss == "deleted":
            registry.unlink()
        else:
            registry.write_text("")
        assert proc.wait(timeout=300) == 0, (tmp_path / "run.err").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (tmp_path / "run.err").read_text()
    assert "Traceback" not in stderr and "RunNotFound" not in stderr, stderr[-3000:]
    assert max(student_epochs_seen(ws, run_id)) == LONG_EPOCHS, "the registry was lost after the run ended"
    printed = json.loads((tmp_path / "run.out").read_text())
    final = record(ws, run_id)
    assert final is not None and final["status"] == "done" and printed["status"] == "done"
    assert final["metrics"] == printed["metrics"] and final["metrics"]["epoch"] == LONG_EPOCHS
    assert final["name"] == "long" and final["spec"]["student"]["epochs"] == LONG_EPOCHS
    assert final["started"] and final["finished"] and final["teachers"]
    on_disk = json.loads((ws / run_id / "record.json").read_text())
    assert on_disk["status"] == "done" and on_disk["metrics"] == final["metrics"]


# -- damaged checkpoints -----------------------------------------------------------------------------

def finished_run(ws: Path, spec: Path) -> dict:
    result = kdtui("run", spec, "--workspace", ws, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json_out(result)


@pytest.mark.slow  # three or four tiny runs in a row
def test_a_damaged_teacher_names_the_file_and_the_way_out(tmp_path, specs):
    ws = tmp_path / "ws"
    first = finished_run(ws, specs / "tiny.toml")
    [teacher_file] = (ws / "teachers").glob("*/teacher.pt")
    teacher_file.write_bytes(b"this is not a checkpoint" * 10)

    result = kdtui("run", specs / "tiny.toml", "--workspace", ws)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(teacher_file) in line and "--retrain-teachers" in line
    failed = [r for r in json_out(kdtui("runs", "list", "--workspace", ws, "--json")) if r["id"] != first["id"]]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert str(teacher_file) in failed[0]["error"] and "weights_only" not in failed[0]["error"]
    assert "\n" not in failed[0]["error"]
    [event] = events(ws, failed[0]["id"], types=("failed",))
    assert str(teacher_file) in event["error"]

    # The advice works: the teacher is trained again, and the next run reuses it.
    assert kdtui("run", specs / "tiny.toml", "--workspace", ws, "--retrain-teachers").returncode == 0
    again = finished_run(ws, specs / "tiny.toml")
    assert again["teachers"][0]["reused"] is True


@pytest.mark.slow  # three or four tiny runs in a row
def test_a_damaged_student_checkpoint_names_the_file_and_the_way_out(tmp_path, specs):
    ws = tmp_path / "ws"
    run = finished_run(ws, specs / "tiny.toml")
    student_file = ws / run["id"] / "student.pt"
    # A run that failed mid-way, and whose checkpoint was cut short (a full disk, a copy interrupted).
    assert student_file.is_file()
    student_file.write_bytes(student_file.read_bytes()[:1000])
    store(ws).update(run["id"], status="failed", error="made to fail by the test")

    result = kdtui("runs", "resume", run["id"], "--workspace", ws)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(student_file) in line and "delete it" in line
    assert str(student_file) in record(ws, run["id"])["error"]

    # The advice works: without the checkpoint the student starts over and the run finishes.
    student_file.unlink()
    resumed = kdtui("runs", "resume", run["id"], "--workspace", ws, "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json_out(resumed)["status"] == "done"


# -- a missing, empty or garbage registry while run folders exist -------------------------------------

READ_COMMANDS = [("runs", "list"), ("runs", "list", "--json"), ("runs", "show", "2611"), ("runs", "export"),
                 ("runs", "export", "--format", "json"), ("runs", "compare", "2611", "2612"), ("runs", "stop", "2611"),
                 ("runs", "rm", "2611", "-y"), ("runs", "tail", "2611"), ("runs", "resume", "2611"), ("queue",),
                 ("report", "2611")]


@pytest.fixture(scope="module")
def broken(tmp_path_factory, specs) -> dict[str, Path]:
    """Three workspaces with one finished run each, whose registry was then deleted, emptied or
    overwritten with garbage."""
    base = tmp_path_factory.mktemp("broken")
    template = base / "template"
    finished_run(template, specs / "tiny.toml")
    out = {}
    for damage, text in (("missing", None), ("empty", ""), ("garbage", "{not json at all")):
        ws = base / damage
        shutil.copytree(template, ws)
        if text is None:
            (ws / "kdtui.json").unlink()
        else:
            (ws / "kdtui.json").write_text(text)
        out[damage] = ws
    return out


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage"])
@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_every_command_names_reindex_on_a_broken_registry(broken, damage, args):
    ws = broken[damage]
    before = sorted(p.name for p in ws.iterdir())
    result = kdtui(*args, "--workspace", ws)
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "kdtui runs reindex" in one_error_line(result)
    assert result.stdout == ""
    assert sorted(p.name for p in ws.iterdir()) == before


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage"])
def test_run_on_a_broken_registry_refuses_before_making_a_folder(broken, specs, damage):
    ws = broken[damage]
    folders = run_folders(ws)
    for attempt in range(2):  # the old code left one orphan folder per attempt
        result = kdtui("run", specs / "tiny.toml", "--workspace", ws)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "kdtui runs reindex" in one_error_line(result)
    assert run_folders(ws) == folders


def test_reindex_rebuilds_every_field_and_says_what_it_found(tmp_path, specs):
    ws = tmp_path / "ws"
    run = finished_run(ws, specs / "tiny.toml")
    listed = json_out(kdtui("runs", "list", "--workspace", ws, "--json"))
    (ws / "261129-000000-dead").mkdir()  # a folder that looks like a run but has no record
    (ws / "kdtui.json").write_text("")

    result = kdtui("runs", "reindex", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert "1 run folder" in result.stdout and "261129-000000-dead" in result.stdout
    assert json_out(kdtui("runs", "list", "--workspace", ws, "--json")) == listed
    shown = json_out(kdtui("runs", "show", run["id"], "--workspace", ws, "--json"))
    assert shown["metrics"] == run["metrics"] and shown["history"] == run["history"]


def test_runs_list_tells_of_run_folders_the_registry_does_not_list(tmp_path, specs):
    ws = tmp_path / "ws"
    run = finished_run(ws, specs / "tiny.toml")
    for suffix in ("aaaa", "bbbb", "cccc"):  # three runs known only by their folders
        copy = ws / f"{run['id'][:-4]}{suffix}"
        shutil.copytree(ws / run["id"], copy)
        record_file = copy / "record.json"
        record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "id": copy.name}))
    result = kdtui("runs", "list", "--workspace", ws, "--full-ids")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "3 run folders are not in the registry: run `kdtui runs reindex`"
    assert run["id"] in result.stdout
    as_json = kdtui("runs", "list", "--workspace", ws, "--json")
    assert [r["id"] for r in json_out(as_json)] == [run["id"]] and "kdtui runs reindex" in as_json.stderr

    assert kdtui("runs", "reindex", "--workspace", ws).returncode == 0
    after = kdtui("runs", "list", "--workspace", ws, "--full-ids")
    assert after.returncode == 0 and after.stderr == "" and after.stdout.count(run["id"][:-4]) == 4


async def test_the_app_names_reindex_instead_of_0_runs(broken):
    from kdtui.tui.app import KdtuiApp

    app = KdtuiApp(broken["garbage"])
    async with app.run_test(size=(200, 24)) as pilot:
        for _ in range(200):
            summary = str(app.screen.query_one("#runs-summary").render())
            if "reindex" in summary:
                break
            await pilot.pause(0.05)
        assert "kdtui runs reindex" in summary and "0 runs" not in summary


# -- the workspace: only `run` creates one --------------------------------------------------------------

@pytest.mark.parametrize("args", [("runs", "list"), ("runs", "list", "--json"), ("runs", "show", "2611"),
                                  ("runs", "export"), ("runs", "reindex"), ("queue",), ("report", "2611"),
                                  ("runs", "tail", "2611")], ids=" ".join)
def test_reading_commands_never_create_a_workspace(tmp_path, args):
    ws = tmp_path / "not-yet"
    result = kdtui(*args, "--workspace", ws)
    assert result.returncode == 2
    assert f"no workspace at {ws}" in one_error_line(result)
    assert not ws.exists()
    env_default = kdtui(*args, cwd=tmp_path)  # the default ./runs, too
    assert env_default.returncode == 2 and "no workspace at" in one_error_line(env_default)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["/proc/kdtui-x", "file"])
def test_a_workspace_that_cannot_be_read_is_one_line(tmp_path, where):
    path = tmp_path / "a-file" if where == "file" else Path(where)
    if where == "file":
        path.write_text("x")
    result = kdtui("runs", "list", "--workspace", path)
    assert result.returncode == 2 and str(path) in one_error_line(result)


@pytest.mark.parametrize("where", ["/proc/kdtui-x", "file-parent", "file"])
def test_run_into_an_impossible_workspace_is_one_line_and_writes_nothing(tmp_path, specs, where):
    (tmp_path / "a-file").write_text("x")
    path = {"/proc/kdtui-x": Path("/proc/kdtui-x"), "file-parent": tmp_path / "a-file" / "ws",
            "file": tmp_path / "a-file"}[where]
    result = kdtui("run", specs / "tiny.toml", "--workspace", path)
    assert result.returncode == 2
    assert str(path) in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_into_a_read_only_workspace_is_one_line_and_leaves_no_folder(tmp_path, specs):
    ws = tmp_path / "ws"
    ws.mkdir()
    ws.chmod(0o555)
    try:
        result = kdtui("run", specs / "tiny.toml", "--workspace", ws)
        assert result.returncode == 2 and "not writable" in one_error_line(result)
        assert list(ws.iterdir()) == []
    finally:
        ws.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_an_unreadable_workspace_is_one_line(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    ws.chmod(0)
    try:
        result = kdtui("runs", "list", "--workspace", ws)
        assert result.returncode == 2 and "cannot read workspace" in one_error_line(result)
    finally:
        ws.chmod(0o755)


# -- export -o ----------------------------------------------------------------------------------------

def test_export_into_a_missing_folder_is_one_line(tmp_path, specs):
    ws = tmp_path / "ws"
    finished_run(ws, specs / "tiny.toml")
    target = tmp_path / "no" / "such" / "folder" / "runs.csv"
    result = kdtui("runs", "export", "--workspace", ws, "-o", target)
    assert result.returncode == 2 and str(target) in one_error_line(result)
    assert not (tmp_path / "no").exists()
    impossible = kdtui("runs", "export", "--workspace", ws, "-o", "/proc/kdtui-x/runs.csv")
    assert impossible.returncode == 2 and "/proc/kdtui-x/runs.csv" in one_error_line(impossible)


# -- names already in a registry are shown escaped -------------------------------------------------------

def test_names_already_in_a_registry_are_shown_escaped(tmp_path, specs):
    ws = tmp_path / "ws"
    run = finished_run(ws, specs / "tiny.toml")
    evil = "evil\x1b]0;pwned\x07\u202etxt.exe"
    store(ws).update(run["id"], name=evil)  # written by an older kdtui
    for args in (("runs", "list"), ("runs", "show", run["id"]), ("runs", "compare", run["id"], run["id"]),
                 ("runs", "export"), ("runs", "export", "--format", "md")):
        result = kdtui(*args, "--workspace", ws)
        assert result.returncode == 0, (args, result.stderr)
        shown = result.stdout + result.stderr
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown, args
        if args[1] != "compare":  # a comparison's columns are run ids
            assert "evil\\x1b]0;pwned\\x07\\u202etxt.exe" in shown, (args, shown)
    # JSON keeps the name as it is (it is data, and JSON escapes it): the record is not rewritten.
    assert json_out(kdtui("runs", "show", run["id"], "--workspace", ws, "--json"))["name"] == evil
