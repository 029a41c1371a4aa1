"""The run actions and typed options of the command line, through the real `kdtui` script on real
registries: `runs stop` with several ids, a group or `--all`; `runs rm` refusing anything that is not
a run id before it removes anything; `runs export -o` to a path it cannot write; `run --json` with the
history; `--version`, `$KDTUI_HOME`, the hidden internal commands, and typed options' one-line errors."""
from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path

import pytest

from cli_helpers import fake_run, json_out, kdtui, record, run_folders, tiny_spec, write
from kdtui.core.events import DONE, QUEUED, RUNNING, STOPPED
from kdtui.core.workspace import STOP_FILE


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- runs stop ---------------------------------------------------------------------------------------

@pytest.fixture
def active_runs(tmp_path):
    """Two groups of active runs (owned by this test process, so they stay active) and a finished one."""
    ws = tmp_path / "ws"
    alive = {"pid": os.getpid()}
    fake_run(ws, "261128-000001-aaaa", status=QUEUED, group_hash="a" * 64, **alive)
    fake_run(ws, "261128-000002-aaaa", status=RUNNING, group_hash="a" * 64, started=time.time(), **alive)
    fake_run(ws, "261128-000003-bbbb", status=QUEUED, group_hash="b" * 64, **alive)
    fake_run(ws, "261128-000004-done", status=DONE)
    return ws


def stop_requested(ws: Path, run_id: str) -> bool:
    return (ws / run_id / STOP_FILE).exists()


def test_stop_takes_several_ids(active_runs):
    ws = active_runs
    result = kdtui("runs", "stop", "261128-000001", "261128-000004-done", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert "261128-000001-aaaa" in lines[0] and "already done" in lines[1]
    assert lines[2] == "1 of 2 run(s) stopped or asked to stop"
    assert record(ws, "261128-000001-aaaa")["status"] == STOPPED
    assert record(ws, "261128-000003-bbbb")["status"] == QUEUED


def test_stop_group_stops_only_that_group(active_runs):
    ws = active_runs
    result = kdtui("runs", "stop", "--group", "aaaa", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert record(ws, "261128-000001-aaaa")["status"] == STOPPED
    assert stop_requested(ws, "261128-000002-aaaa") and "stop requested" in result.stdout
    assert record(ws, "261128-000003-bbbb")["status"] == QUEUED and not stop_requested(ws, "261128-000003-bbbb")
    assert result.stdout.strip().splitlines()[-1] == "2 of 2 run(s) stopped or asked to stop"


def test_stop_all_with_yes_stops_every_active_run(active_runs):
    ws = active_runs
    result = kdtui("runs", "stop", "--all", "-y", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert record(ws, "261128-000001-aaaa")["status"] == STOPPED
    assert record(ws, "261128-000003-bbbb")["status"] == STOPPED
    assert stop_requested(ws, "261128-000002-aaaa")
    assert record(ws, "261128-000004-done")["status"] == DONE
    assert result.stdout.strip().splitlines()[-1] == "3 of 3 run(s) stopped or asked to stop"


def test_stop_all_without_yes_and_without_a_terminal_refuses(active_runs):
    ws = active_runs
    line = one_error_line(kdtui("runs", "stop", "--all", "--workspace", ws))
    assert "--yes" in line
    assert record(ws, "261128-000001-aaaa")["status"] == QUEUED and not stop_requested(ws, "261128-000002-aaaa")


@pytest.mark.parametrize("args", [[], ["261128-000001", "--all"], ["--group", "aaaa", "--all", "-y"]],
                         ids=["nothing", "ids-and-all", "group-and-all"])
def test_stop_needs_exactly_one_selection(active_runs, args):
    line = one_error_line(kdtui("runs", "stop", *args, "--workspace", active_runs))
    assert "--group" in line and "--all" in line
    assert record(active_runs, "261128-000001-aaaa")["status"] == QUEUED


# -- runs rm -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["", " ", "../261128", "261128-000004-done/..", "261128 000004", "261128\x1b[2J",
                                 "261128-000004-do\u202ene", "*"],
                         ids=["empty", "space", "dotdot", "slash", "inner-space", "escape", "bidi", "glob"])
def test_rm_checks_every_id_before_removing_anything(tmp_path, bad):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000004-done")
    line = one_error_line(kdtui("runs", "rm", "261128-000004-done", bad, "--yes", "--workspace", ws))
    assert "not a run id" in line
    assert "\x1b" not in line and "\u202e" not in line  # shown escaped, never acted on by the terminal
    assert record(ws, "261128-000004-done") is not None
    assert run_folders(ws) == ["261128-000004-done"]


# -- runs export -o ----------------------------------------------------------------------------------

def test_export_to_a_missing_folder_is_one_line(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000004-done")
    target = tmp_path / "no-such-folder" / "runs.csv"
    line = one_error_line(kdtui("runs", "export", "--workspace", ws, "-o", target))
    assert str(target) in line
    assert not target.parent.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_export_without_permission_is_one_line(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000004-done")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        line = one_error_line(kdtui("runs", "export", "--workspace", ws, "-o", locked / "runs.csv"))
        assert str(locked / "runs.csv") in line and list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_export_to_an_impossible_path_is_one_line(tmp_path):
    """/proc takes no new files, whoever asks (root included): the permission case on every machine."""
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000004-done")
    line = one_error_line(kdtui("runs", "export", "--workspace", ws, "-o", "/proc/kdtui-runs.csv"))
    assert "/proc/kdtui-runs.csv" in line


def test_export_replaces_an_existing_file_whole(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000004-done")
    target = write(tmp_path / "runs.csv", "old contents that are longer than nothing\n" * 100)
    result = kdtui("runs", "export", "--workspace", ws, "-o", target)
    assert result.returncode == 0, result.stderr
    assert target.read_text().splitlines()[0].startswith("id,")
    assert "old contents" not in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "ws"]  # no temporary file left


# -- run --json --------------------------------------------------------------------------------------

def test_run_json_prints_the_full_record_with_history(tmp_path):
    spec = write(tmp_path / "t.toml", tiny_spec("with-history", student_epochs=2))
    printed = json_out(kdtui("run", spec, "--json", "--workspace", tmp_path / "ws"))
    assert printed["status"] == DONE
    assert printed["history"] and printed["history"][-1]["epoch"] == 2
    shown = json_out(kdtui("runs", "show", printed["id"], "--json", "--workspace", tmp_path / "ws"))
    assert printed["history"] == shown["history"]


# -- the root: --version, $KDTUI_HOME, hidden commands -----------------------------------------------

def test_version_prints_the_package_version():
    result = kdtui("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kdtui {importlib.metadata.version('kdtui')}"


def test_kdtui_home_names_the_workspace_and_the_option_wins(tmp_path):
    fake_run(tmp_path / "home", "261128-000004-home")
    fake_run(tmp_path / "other", "261128-000005-othr")
    from_env = kdtui("runs", "list", "--json", env_extra={"KDTUI_HOME": str(tmp_path / "home")})
    assert [r["id"] for r in json_out(from_env)] == ["261128-000004-home"]
    for args in (["-w", tmp_path / "other", "runs", "list", "--json"],
                 ["runs", "list", "--json", "--workspace", tmp_path / "other"]):
        result = kdtui(*args, env_extra={"KDTUI_HOME": str(tmp_path / "home")})
        assert [r["id"] for r in json_out(result)] == ["261128-000005-othr"]


def test_internal_commands_are_hidden_but_callable():
    shown = kdtui("--help").stdout
    for name in ("worker", "ddp-rank", "ray-driver"):
        assert name not in shown
        assert kdtui(name, "--help").returncode == 0


# -- typed options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["run", "x.toml", "--nproc", "two"], "--nproc"),
    (["run", "x.toml", "--nproc", "0"], "--nproc"),
    (["run", "x.toml", "--slots-per-gpu", "0"], "--slots-per-gpu"),
    (["run", "x.toml", "--gpus-per-run", "-1"], "--gpus-per-run"),
    (["run", "x.toml", "--executor", "kubernetes"], "--executor"),
    (["runs", "list", "--status", "finished"], "--status"),
    (["runs", "export", "--format", "xlsx"], "--format"),
    (["runs", "compare", "a", "b", "--agg", "median"], "--agg"),
    (["serve", "--port", "http"], "--port"),
    (["serve", "--port", "0"], "--port"),
], ids=lambda v: "-".join(v) if isinstance(v, list) else v)
def test_a_bad_option_value_is_one_line_naming_the_option(tmp_path, args, option):
    line = one_error_line(kdtui(*args, "--workspace", tmp_path / "ws"))
    assert option in line
    assert run_folders(tmp_path / "ws") == []
