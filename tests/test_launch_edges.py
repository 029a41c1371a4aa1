"""Edges of starting runs in the background: bad queue settings refuse before anything is
registered, a detached sweep enters the registry already handed to the line (no record rewritten),
and `runs tail` follows a run that still waits in the line."""
from __future__ import annotations

import json
import subprocess

import pytest

from kdtui.core.eventlog import EventWriter
from kdtui.core.events import DONE, QUEUED, RUNNING, STOPPED, Done, Log
from kdtui.core.lifecycle import reconcile
from kdtui.core.registry import RECORD_NAME, RunStore
from kdtui.core.spec import spec_from_dict
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import RunQueue, plan_slots
from kdtui.runs.service import RunService, ServiceError
from tests.cli_helpers import KDTUI, cli_env, kdtui, tiny_spec, wait_for, write


def _points(n: int, device: str = "cpu") -> list:
    return [spec_from_dict({"name": f"p{k}", "data": {"dataset": "digits"}, "seed": k, "device": device}).resolved()
            for k in range(n)]


def _registered(ws_root) -> int:
    ws = Workspace(ws_root)
    runs = ws.root / "runs"
    folders = [p for p in runs.iterdir()] if runs.exists() else []
    return len(folders) + (len(RunStore(ws).all()) if (ws.root / "kdtui.json").exists() else 0)


@pytest.mark.parametrize("setting, device, field", [
    ("[queue]\nslots_per_gpu = 0\n", "cpu", "slots_per_gpu"),
    ("[queue\n", "cpu", "settings.toml"),
    ("", "cuda:2", "cuda:2"),  # one GPU visible
])
def test_a_detached_launch_that_the_queue_refuses_registers_nothing(tmp_path, setting, device, field):
    ws = tmp_path / "ws"
    ws.mkdir()
    if setting:
        (ws / "settings.toml").write_text(setting)
    spec = write(tmp_path / "s.toml", tiny_spec("refused", sweep="seed = [0, 1]").replace(
        'device = "cpu"', f'device = "{device}"'))
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    result = kdtui("run", spec, "--detach", "--workspace", ws, env_extra=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and field in result.stderr
    assert _registered(ws) == 0, "nothing registered, no run folder left"


def test_resume_detached_that_the_queue_refuses_changes_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    service = RunService(ws, store)
    [run_id] = service.submit(_points(1))
    store.update(run_id, status=STOPPED)
    (ws.root / "settings.toml").write_text("[queue]\nslots_per_gpu = -1\n")
    with pytest.raises(ServiceError, match="slots_per_gpu"):
        service.resume_detached([store.get(run_id)])
    assert store.get(run_id)["status"] == STOPPED
    result = kdtui("runs", "resume", run_id, "--detach", "--workspace", ws.root)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "slots_per_gpu" in result.stderr
    assert store.get(run_id)["status"] == STOPPED


def test_update_many_leaves_records_that_already_have_the_values(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    ids = RunService(ws, store).submit(_points(3))  # pid None
    inodes = [(ws.run_dir(i) / RECORD_NAME).stat().st_ino for i in ids]
    store.update_many(ids, pid=None)
    assert [(ws.run_dir(i) / RECORD_NAME).stat().st_ino for i in ids] == inodes, "no record.json rewritten"
    store.update_many(ids[:1], pid=123)
    assert (ws.run_dir(ids[0]) / RECORD_NAME).stat().st_ino != inodes[0]
    assert json.loads((ws.run_dir(ids[0]) / RECORD_NAME).read_text())["pid"] == 123
    assert [store.get(i)["pid"] for i in ids] == [123, None, None]


def test_a_detached_sweep_is_registered_already_in_the_line(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    queue = RunQueue(ws)
    held = queue.try_slot(plan_slots([], 1)["cpu"][0])  # a busy slot: no worker starts, the runs stay in line
    try:
        ids, pids = RunService(ws, store).submit_detached(_points(20))
        assert pids == []
        with queue.locked():
            entries, _ = queue.waiting(store)
        assert [e["run"] for e in entries] == ids
        records = [store.get(i) for i in ids]
        assert {(r["status"], r["pid"]) for r in records} == {(QUEUED, None)}
        on_disk = [json.loads((ws.run_dir(i) / RECORD_NAME).read_text()) for i in ids]
        assert [r["pid"] for r in on_disk] == [None] * 20
        assert reconcile(RunStore(ws)) == []  # waiting in the line is not "owner gone"
    finally:
        held.release()


def test_a_line_entry_for_a_run_never_registered_is_dropped(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    [run_id] = RunService(ws, store).submit(_points(1))
    store.update(run_id, pid=None)
    queue = RunQueue(ws)
    with queue.locked():  # what a process killed between writing the line and the records leaves
        queue.append([queue.entry("20990101-000000-dead", ["cpu"]), queue.entry(run_id, ["cpu"])])
        assert queue.take_next(store, "cpu")["run"] == run_id
        assert queue.read_line() == []


def test_tail_follows_a_run_that_waits_in_the_line_until_it_ends(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    [run_id] = RunService(ws, store).submit(_points(1))
    store.update(run_id, pid=None)  # queued in the line: no process of its own yet
    events = EventWriter(ws.events_path(run_id))
    events.write(Log("waiting").to_dict())
    out = open(tmp_path / "tail.out", "w")
    tail = subprocess.Popen([*KDTUI, "runs", "tail", run_id, "--json", "--workspace", str(ws.root)],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True, env=cli_env())
    try:
        wait_for(lambda: "waiting" in (tmp_path / "tail.out").read_text(), what="the tail to show the first event")
        # Only now does a "worker" take the run; a tail that stopped at the queued run has exited 1 already.
        sleeper = subprocess.Popen(["sleep", "600"])
        store.update(run_id, status=RUNNING, pid=sleeper.pid)
        events.write(Log("running").to_dict())
        events.write(Done(metrics={}).to_dict())
        store.update(run_id, status=DONE)
        sleeper.kill()
        sleeper.wait()
        assert tail.wait(timeout=120) == 0, (tmp_path / "tail.out").read_text()
    finally:
        if tail.poll() is None:
            tail.kill()
        events.close()
        out.close()
    lines = [json.loads(line) for line in (tmp_path / "tail.out").read_text().splitlines()]
    assert [e.get("message") for e in lines if e["type"] == "log"] == ["waiting", "running"]
    assert lines[-1]["type"] == Done.type
