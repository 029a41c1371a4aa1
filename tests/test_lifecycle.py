"""kdtui.core.lifecycle: every status change by name, reads that never write, the explicit settling
step, and metric bounds that fail a run instead of storing an impossible number."""
from __future__ import annotations

import ast
import json
import math
import os
import socket
from pathlib import Path

import pytest

from cli_helpers import dead_pid, fake_run, json_out, kdtui
from kdtui.core import lifecycle
from kdtui.core.eventlog import EventWriter
from kdtui.core.registry import RunStore, record_with_history
from kdtui.core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
WRITES = {"update", "update_many", "put", "add", "add_many"}


# -- no status is written outside lifecycle.py ------------------------------------------------------

def status_writes(source: str) -> list[int]:
    """Lines of `source` that write a record's status: a `status=` keyword or a dict with a "status"
    key handed to a registry write (update, update_many, put, add, add_many), or an assignment to
    `something["status"]`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            if any(k.arg == "status" for k in node.keywords):
                lines.append(node.lineno)
            for arg in [*node.args, *(k.value for k in node.keywords if k.arg is None)]:
                if isinstance(arg, ast.Dict) and any(
                        isinstance(key, ast.Constant) and key.value == "status" for key in arg.keys):
                    lines.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant) \
                    and target.slice.value == "status":
                lines.append(node.lineno)
    return sorted(lines)


def test_the_status_detector_sees_each_kind_of_write():
    snippet = """
store.update(run_id, status=DONE)
store.update_many(ids, **{"status": "queued"})
store.put({"id": x, "status": "failed"})
record["status"] = "stopped"
store.update(run_id, name="x")       # not a status
print(record["status"])              # a read
"""
    assert status_writes(snippet) == [2, 3, 4, 5]


def test_no_module_but_lifecycle_writes_a_status():
    offenders = []
    for path in sorted((REPO / "kdtui").rglob("*.py")):
        if path == REPO / "kdtui" / "core" / "lifecycle.py":
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}" for line in status_writes(path.read_text())]
    assert offenders == []


# -- reads never write --------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root`: its bytes and its modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def stale_workspace(tmp_path) -> tuple[Workspace, str, str]:
    """A workspace with a run left `running` by a dead process, one whose dead process wrote its
    `done` event, and a finished run."""
    ws = Workspace(tmp_path / "ws")
    lost, ended = "261201-000000-lost", "261201-000001-endd"
    fake_run(ws.root, lost, status="running", pid=dead_pid(), started=1.0)
    fake_run(ws.root, ended, status="running", pid=dead_pid(), started=1.0)
    with EventWriter(ws.events_path(ended)) as w:
        w.write({"type": "done", "metrics": {"test_agreement": 0.5, "test_acc": 0.75}, "t": 5.0})
    fake_run(ws.root, "261201-000002-fine")
    return ws, lost, ended


def test_reading_a_workspace_with_stale_runs_writes_nothing(stale_workspace):
    ws, lost, ended = stale_workspace
    before = snapshot(ws.root)
    store = RunStore(ws)
    assert {r["id"]: r["status"] for r in store.all()}[lost] == "running"
    store.all(details=True)
    assert store.get(lost)["status"] == "running"
    store.find(status="running")
    store.find(name="fake", details=True)
    assert store.resolve("lost")["status"] == "running"
    store.resolve_all(["endd", "fine"])
    store.with_details(store.all())
    len(store)
    store.unregistered_run_folders()
    record_with_history(store, ws, ended)
    assert snapshot(ws.root) == before

    # The explicit step settles both, in the folders and the index.
    assert sorted(lifecycle.reconcile(RunStore(ws))) == sorted([lost, ended])
    assert RunStore(ws).get(lost)["status"] == "interrupted"
    done = RunStore(ws).get(ended)
    assert done["status"] == "done" and done["finished"] == 5.0
    assert done["metrics"] == {"test_agreement": 0.5, "test_acc": 0.75}
    on_disk = json.loads((ws.run_dir(lost) / "record.json").read_text())
    assert on_disk["status"] == "interrupted"
    assert lifecycle.reconcile(RunStore(ws)) == []


def test_a_dead_run_whose_log_cannot_be_read_settles_as_interrupted_naming_the_log(stale_workspace):
    ws, lost, _ = stale_workspace
    ws.events_path(lost).unlink(missing_ok=True)
    os.mkfifo(ws.events_path(lost))  # a FIFO where the log should be: never read, never waited on
    assert lost in lifecycle.reconcile(RunStore(ws))
    settled = RunStore(ws).get(lost)
    assert settled["status"] == "interrupted"
    assert "event log cannot be read" in settled["error"] and "not a regular file" in settled["error"]


def test_show_reads_and_list_settles(stale_workspace):
    ws, lost, _ = stale_workspace
    before = snapshot(ws.root)
    shown = json_out(kdtui("runs", "show", lost, "--workspace", ws.root, "--json"))
    assert shown["status"] == "running"
    assert snapshot(ws.root) == before
    listed = {r["id"]: r for r in json_out(kdtui("runs", "list", "--workspace", ws.root, "--json"))}
    assert listed[lost]["status"] == "interrupted"


def test_reindex_settles_stale_runs(stale_workspace):
    ws, lost, _ = stale_workspace
    result = kdtui("runs", "reindex", "--workspace", ws.root)
    assert result.returncode == 0, result.stderr
    assert RunStore(ws).get(lost)["status"] == "interrupted"


# -- transitions ------------------------------------------------------------------------------------

def test_each_transition_sets_its_status_and_fields(tmp_path):
    store = RunStore(tmp_path / "ws")
    store.add({"id": "r", "status": "queued", "pid": 1})
    taken = lifecycle.take(store, "r", worker=4242, slot="cpu.0", gpu=None)
    assert taken["status"] == "queued" and taken["pid"] == taken["worker"] == 4242 and taken["slot"] == "cpu.0"
    assert taken["taken"] > 0
    running = lifecycle.start(store, "r", nproc=1)
    assert running["status"] == "running" and running["pid"] == os.getpid() and running["host"] == HOST
    assert running["finished"] is None and running["error"] is None and running["nproc"] == 1
    failed = lifecycle.fail(store, "r", "boom")
    assert failed["status"] == "failed" and failed["error"] == "boom" and failed["finished"] >= running["started"]
    requeued = lifecycle.requeue(store, "r", pid=None)
    assert requeued["status"] == "queued" and requeued["error"] is None and requeued["pid"] is None
    lifecycle.start(store, "r")
    assert lifecycle.stop(store, "r")["status"] == "stopped"
    lifecycle.requeue_many(store, ["r"], pid=None, slot=None)
    assert store.get("r")["status"] == "queued" and store.get("r")["slot"] is None
    lifecycle.start(store, "r")
    finished = lifecycle.done(store, "r", {"test_acc": 0.5})
    assert finished["status"] == "done" and finished["metrics"] == {"test_acc": 0.5}
    assert lifecycle.end(store, "r", "stopped")["status"] == "stopped"


def out_of_bounds(metrics: dict) -> str | None:
    """The bounds written out independently of kdtui.core.record: the first violation's name."""
    for name, value in metrics.items():
        if not isinstance(value, (int, float)):
            continue
        if math.isnan(value) or math.isinf(value):
            return name
        if ("agreement" in name or name.endswith("_acc") or name.endswith("_ece")) and not 0.0 <= value <= 1.0:
            return name
        if name.endswith("_kl") and value < -1e-6:
            return name
    return None


METRIC_CASES = [
    {"test_agreement": 0.5, "test_acc": 1.0, "test_kl": 0.0, "train_loss": 3.2, "epoch": 4},
    {"test_agreement": 1.2, "test_acc": 0.5},
    {"train_agreement": -0.01},
    {"teacher_test_acc": 1.0000001},
    {"test_kl": -1e-7, "test_ece": 0.3},   # a rounding error below 0: accepted
    {"test_kl": -1e-3},
    {"independent_test_kl": float("nan")},
    {"train_loss": float("inf")},
    {"test_ece": 1.5},
]


@pytest.mark.parametrize("metrics", METRIC_CASES)
def test_a_done_run_with_impossible_metrics_fails_loudly(tmp_path, metrics):
    store = RunStore(tmp_path / "ws")
    store.add({"id": "r", "status": "running"})
    after = lifecycle.done(store, "r", metrics)
    bad = out_of_bounds(metrics)
    if bad is None:
        assert after["status"] == "done" and after["metrics"] == metrics
        return
    assert after["status"] == "failed"
    assert bad in after["error"] and repr(metrics[bad]) in after["error"]
    assert after["metrics"] == {}  # the impossible value is never stored
    assert json.loads((store.workspace.run_dir("r") / "record.json").read_text())["metrics"] == {}


def test_settling_a_done_event_with_impossible_metrics_fails_the_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    fake_run(ws.root, "261201-000000-nans", status="running", pid=dead_pid(), started=1.0)
    with EventWriter(ws.events_path("261201-000000-nans")) as w:
        w.write({"type": "done", "metrics": {"test_agreement": 0.5, "test_kl": float("nan")}})
    assert lifecycle.reconcile(RunStore(ws)) == ["261201-000000-nans"]
    settled = RunStore(ws).get("261201-000000-nans")
    assert settled["status"] == "failed" and "test_kl" in settled["error"]


def test_a_run_whose_final_metrics_are_impossible_ends_failed(tmp_path):
    """A real tiny run in this process, with the engine's final test accuracy replaced by 1.5."""
    from cli_helpers import tiny_spec
    from kdtui.core.spec import parse_spec
    from kdtui.runs.execute import execute
    from kdtui.runs.service import RunService
    from kernels import engine

    ws = Workspace(tmp_path / "ws", create=True)
    store = RunStore(ws)
    [run_id] = RunService(ws, store).submit([parse_spec(tiny_spec("bounds", student_epochs=1)).resolved()])
    real = engine.distill

    def distill(*args, **kwargs):
        result = real(*args, **kwargs)
        result["metrics"]["test_acc"] = 1.5
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(engine, "distill", distill)
    try:
        final = execute(ws, store, run_id, install_signals=False)
    finally:
        mp.undo()
    assert final["status"] == "failed" and "test_acc" in final["error"] and "1.5" in final["error"]
    on_disk = json.loads((ws.run_dir(run_id) / "record.json").read_text())
    assert on_disk["status"] == "failed" and "test_acc" not in on_disk["metrics"]
    last = [json.loads(line) for line in ws.events_path(run_id).read_text().splitlines()][-1]
    assert last["type"] == "failed" and "test_acc" in last["error"]
