"""The read and housekeeping commands on a registry the test writes itself (no training needed):
start-up without torch, stale-pid reconciliation, short ids, `runs rm`, JSON-only output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import cli_env, dead_pid, fake_run, json_out, kdtui, record, run_folders, store
from kdtui.core.registry import RunStore
from kdtui.runs.service import RunService
from kdtui.core.spec import parse_spec
from kdtui.core.workspace import Workspace


# -- start-up cost -----------------------------------------------------------------------------------

PROBE = """
import sys
from kdtui.cli import app
try:
    app(sys.argv[1:], prog_name="kdtui")
except SystemExit as exc:
    code = exc.code
torched = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH_MODULES=" + ",".join(torched), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["runs", "list"], ["runs", "list", "--json"], ["runs", "--help"]],
                         ids=["help", "runs-list", "runs-list-json", "runs-help"])
def test_read_commands_do_not_import_torch(tmp_path, args):
    fake_run(tmp_path / "ws", "261128-000000-aaaa")
    extra = ["--workspace", str(tmp_path / "ws")] if args[:2] == ["runs", "list"] else []
    result = subprocess.run([sys.executable, "-c", PROBE, *args, *extra], capture_output=True, text=True,
                            env=cli_env(), timeout=120)
    assert "TORCH_MODULES=\n" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_help_via_importtime_shows_no_torch(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "kdtui.cli", "runs", "list",
                             "--workspace", str(tmp_path)], capture_output=True, text=True, env=cli_env(),
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "no -X importtime output"
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


def test_help_lists_the_commands():
    result = kdtui("--help")
    assert result.returncode == 0
    for command in ("run", "runs"):
        assert command in result.stdout
    result = kdtui("runs", "--help")
    for command in ("list", "show", "compare", "export", "stop", "resume", "rm", "tail"):
        assert command in result.stdout


# -- stale pids --------------------------------------------------------------------------------------

def test_running_record_with_dead_pid_lists_as_interrupted(tmp_path):
    ws = tmp_path / "ws"
    pid = dead_pid()
    fake_run(ws, "261128-000000-dead", status="running", pid=pid, started=time.time())
    fake_run(ws, "261128-000001-dead", status="queued", pid=pid)
    fake_run(ws, "261128-000002-live", status="running", pid=os.getpid(), started=time.time())
    fake_run(ws, "261128-000003-othr", status="running", pid=pid, host="some-other-host")
    listed = {r["id"]: r for r in json_out(kdtui("runs", "list", "--workspace", ws, "--json"))}
    assert listed["261128-000000-dead"]["status"] == "interrupted"
    assert listed["261128-000000-dead"]["finished"] is not None
    assert listed["261128-000001-dead"]["status"] == "interrupted"
    assert listed["261128-000002-live"]["status"] == "running"        # this test process is alive
    assert listed["261128-000003-othr"]["status"] == "running"        # another host's pid means nothing here
    # Settled in the file, not only in that one listing.
    assert record(ws, "261128-000000-dead")["status"] == "interrupted"
    shown = json_out(kdtui("runs", "show", "261128-000000-dead", "--workspace", ws, "--json"))
    assert shown["status"] == "interrupted"


def test_dead_run_that_wrote_done_is_reconciled_to_done(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000000-done", status="running", pid=dead_pid(), started=time.time())
    with open(ws / "261128-000000-done" / "events.jsonl", "a") as f:
        f.write(json.dumps({"t": time.time(), "type": "done", "metrics": {"test_agreement": 0.5}}) + "\n")
    listed = json_out(kdtui("runs", "list", "--workspace", ws, "--json"))
    assert listed[0]["status"] == "done"
    assert listed[0]["metrics"] == {"test_agreement": 0.5}


# -- short ids ---------------------------------------------------------------------------------------

@pytest.fixture
def three_runs(tmp_path):
    ws = tmp_path / "ws"
    for run_id in ("261128-101010-aaaa", "261128-101010-aabb", "261128-111111-cccc"):
        fake_run(ws, run_id)
    return ws


def test_unique_prefix_resolves(three_runs):
    shown = json_out(kdtui("runs", "show", "261128-1111", "--workspace", three_runs, "--json"))
    assert shown["id"] == "261128-111111-cccc"
    shown = json_out(kdtui("runs", "show", "261128-101010-aab", "--workspace", three_runs, "--json"))
    assert shown["id"] == "261128-101010-aabb"
    # An exact id wins even when it is also a prefix of nothing else.
    assert json_out(kdtui("runs", "show", "261128-101010-aaaa", "--workspace", three_runs, "--json"))["id"] \
        == "261128-101010-aaaa"


@pytest.mark.parametrize("command", [["runs", "show"], ["runs", "stop"], ["runs", "resume"], ["runs", "rm", "--yes"]])
def test_ambiguous_prefix_lists_the_matches(three_runs, command):
    result = kdtui(*command, "261128-1010", "--workspace", three_runs)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "ambiguous" in lines[0]
    assert "261128-101010-aaaa" in lines[0] and "261128-101010-aabb" in lines[0]
    assert "261128-111111-cccc" not in lines[0]
    assert len(store(three_runs).all()) == 3  # nothing was deleted or changed


# -- runs rm -----------------------------------------------------------------------------------------

@pytest.fixture
def real_record(tmp_path):
    """A run registered the way `kdtui run` registers it (folder, resolved spec), marked done."""
    ws = Workspace(tmp_path / "ws")
    run_store = RunStore(ws)
    [run_id] = RunService(ws, run_store).submit([parse_spec('name = "to-delete"\n').resolved()])
    run_store.update(run_id, status="done", finished=time.time())
    return ws.root, run_id


def test_rm_without_yes_and_without_a_terminal_refuses(real_record):
    ws, run_id = real_record
    result = kdtui("runs", "rm", run_id, "--workspace", ws)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--yes" in lines[0] and run_id in lines[0]
    assert record(ws, run_id) is not None and (ws / run_id).is_dir()


def test_rm_with_yes_deletes_record_and_folder(real_record):
    ws, run_id = real_record
    result = kdtui("runs", "rm", run_id[:-1], "--workspace", ws, "--yes")
    assert result.returncode == 0, result.stderr
    assert record(ws, run_id) is None
    assert not (ws / run_id).exists()
    assert run_folders(ws) == []


def _rm_on_a_terminal(ws: Path, run_id: str, answer: bytes) -> tuple[int, str]:
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen([*__import__("cli_helpers").KDTUI, "runs", "rm", run_id, "--workspace", str(ws)],
                               stdin=slave, stdout=slave, stderr=slave, env=cli_env(), close_fds=True)
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and b"Delete" in output and b"?" in output:
                os.write(master, answer)
                answered = True
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=60), output.decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


def test_rm_asks_on_a_terminal(real_record):
    ws, run_id = real_record
    code, output = _rm_on_a_terminal(ws, run_id, b"n\n")
    assert code == 0 and "Delete" in output
    assert record(ws, run_id) is not None and (ws / run_id).is_dir()
    code, output = _rm_on_a_terminal(ws, run_id, b"y\n")
    assert code == 0 and f"deleted {run_id}" in output
    assert record(ws, run_id) is None and not (ws / run_id).exists()


def test_rm_refuses_an_active_run(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000000-live", status="running", pid=os.getpid(), started=time.time())
    result = kdtui("runs", "rm", "261128-000000-live", "--workspace", ws, "--yes")
    assert result.returncode == 2 and "still active" in result.stderr
    assert record(ws, "261128-000000-live") is not None


# -- JSON only on stdout -----------------------------------------------------------------------------

def test_list_and_show_json_are_json_only(three_runs):
    listed = json_out(kdtui("runs", "list", "--workspace", three_runs, "--json"))
    assert [r["id"] for r in listed] == ["261128-101010-aaaa", "261128-101010-aabb", "261128-111111-cccc"]
    shown = json_out(kdtui("runs", "show", "261128-111111-cccc", "--workspace", three_runs, "--json"))
    for key in ("id", "name", "status", "spec", "spec_hash", "group_hash", "metrics", "history", "teachers",
                "device", "host", "pid", "created", "started", "finished", "error"):
        assert key in shown, key
    assert [row["epoch"] for row in shown["history"]] == [0, 1, 2]
    filtered = json_out(kdtui("runs", "list", "--workspace", three_runs, "--json", "--name", "cccc"))
    assert [r["id"] for r in filtered] == ["261128-111111-cccc"]


def test_list_table_shows_whole_ids_in_80_columns(three_runs):
    result = subprocess.run([*__import__("cli_helpers").KDTUI, "runs", "list", "--full-ids", "--workspace",
                             str(three_runs)],
                            capture_output=True, text=True, env={**cli_env(), "COLUMNS": "80"}, timeout=120)
    assert result.returncode == 0
    for run_id in ("261128-101010-aaaa", "261128-101010-aabb", "261128-111111-cccc"):
        assert run_id in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_empty_workspace_lists_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    assert json_out(kdtui("runs", "list", "--workspace", tmp_path / "empty", "--json")) == []


def test_a_read_command_never_creates_a_workspace(tmp_path):
    result = kdtui("runs", "list", "--workspace", tmp_path / "missing", "--json")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "missing") in lines[0]
    assert not (tmp_path / "missing").exists()
