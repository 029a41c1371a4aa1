"""The queue of one box: detached runs wait for a device slot (an OS file lock), first come first served.

The slot rules are checked directly (GPU lists are given, so no GPU is needed); the behaviour through
real detached workers launched by the installed `kdtui`, on CPU slots: one worker per free slot, each
serving the line until it is empty.
"""
from __future__ import annotations

import os
import signal

import pytest

from kdtui.core.procs import pid_alive
from kdtui.core.lifecycle import reconcile
from kdtui.core.registry import RunStore
from kdtui.core.spec import spec_from_dict
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import QueueError, RunQueue, Slot, demand, plan_slots, pools_for_device, \
    read_slots_per_gpu, visible_gpus
from kdtui.runs.service import RunService
from tests.cli_helpers import json_out, kdtui, record, tiny_spec, wait_for, write

FINAL = ("done", "failed", "stopped", "interrupted")


# -- the rules -----------------------------------------------------------------------------------

def test_visible_gpus_follow_cuda_visible_devices_then_nvidia_smi():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, query=lambda: ["0"]) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, query=lambda: ["0"]) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at the first invalid id
    assert visible_gpus({}, query=lambda: ["0", "1"]) == ["0", "1"]


def test_slots_per_gpu_and_the_pools_a_run_may_use():
    pools = plan_slots(["0", "1"], 2)
    assert [s.name for s in pools["gpu0"]] == ["gpu0.0", "gpu0.1"]
    assert [s.name for s in pools["gpu1"]] == ["gpu1.0", "gpu1.1"]
    assert pools["gpu1"][1] == Slot("gpu1.1", "1", 2)
    assert pools["gpu1"][1].environment() == {"CUDA_VISIBLE_DEVICES": "1", "KDTUI_SLOTS_PER_DEVICE": "2"}
    assert [s.name for s in plan_slots([], 1)["cpu"]] == ["cpu.0"]  # CPU-only box: one slot by default
    assert plan_slots([], 1)["cpu"][0].environment() == {"KDTUI_SLOTS_PER_DEVICE": "1"}

    assert pools_for_device("auto", ["0", "1"]) == ["gpu0", "gpu1"]
    assert pools_for_device("cuda", ["4"]) == ["gpu4"]
    assert pools_for_device("cuda:1", ["4", "6"]) == ["gpu6"]
    assert pools_for_device("cpu", ["0"]) == ["cpu"]
    assert pools_for_device("auto", []) == ["cpu"]
    with pytest.raises(QueueError, match="cuda:2"):
        pools_for_device("cuda:2", ["0"])


def test_workspace_setting_and_its_errors(tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert read_slots_per_gpu(ws) == 1
    (ws.root / "settings.toml").write_text("[queue]\nslots_per_gpu = 3\n")
    assert read_slots_per_gpu(ws) == 3
    (ws.root / "settings.toml").write_text("[queue]\nslots_per_gpu = 0\n")
    with pytest.raises(QueueError, match="queue.slots_per_gpu = 0"):
        read_slots_per_gpu(ws)
    result = kdtui("queue", "--workspace", ws.root)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "slots_per_gpu" in result.stderr


# -- real detached runs -------------------------------------------------------------------------

def _launch(tmp_path, ws, name: str, seeds: int, *flags, student_epochs: int = 2, batch: int = 64) -> list[str]:
    spec = write(tmp_path / f"{name}.toml", tiny_spec(name, student_epochs=student_epochs, student_batch=batch,
                                                      data="teacher_subset = 200",
                                                      sweep=f"seed = {list(range(seeds))}"))
    result = kdtui("run", spec, "--detach", "--json", "--workspace", ws, *flags)
    assert result.returncode == 0, result.stderr
    return [r["id"] for r in json_out(result)]


def _all_final(ws, ids):
    records = [record(ws, run_id) for run_id in ids]
    return records if all(r and r["status"] in FINAL for r in records) else None


def _max_overlap(records) -> int:
    edges = sorted([(r["started"], 1) for r in records] + [(r["finished"], -1) for r in records])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def _queued_in_line(ws, run_id) -> bool:
    current = record(ws, run_id) or {}
    return current.get("status") == "queued" and current.get("pid") is None


def test_six_runs_on_two_slots_start_two_workers_first_in_line_first(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "settings.toml").write_text("[queue]\nslots_per_gpu = 2\n")  # the workspace's setting
    ids = _launch(tmp_path, ws, "six", 6)
    records = wait_for(lambda: _all_final(ws, ids), timeout=600, what="six queued runs to finish")
    assert [r["status"] for r in records] == ["done"] * 6
    assert len({r["worker"] for r in records}) <= 2, "one worker per free slot, not one per run"
    assert _max_overlap(records) <= 2
    assert [r["id"] for r in sorted(records, key=lambda r: r["taken"])] == ids, "taken first in line first"
    assert {r["slot"] for r in records} <= {"cpu.0", "cpu.1"} and all(r["gpu"] is None for r in records)
    for a in records:  # two runs at once never share a slot
        for b in records:
            if a is not b and a["started"] < b["finished"] and b["started"] < a["finished"]:
                assert a["slot"] != b["slot"]
    assert json_out(kdtui("queue", "--workspace", ws, "--json"))["waiting"] == []
    wait_for(lambda: not any(pid_alive(r["worker"]) for r in records), timeout=60, what="the workers to exit")


@pytest.mark.slow  # FIFO is also checked, on two slots, by the test above
def test_runs_start_in_the_order_they_were_queued(tmp_path):
    ws = tmp_path / "ws"
    ids = _launch(tmp_path, ws, "fifo", 4)  # default: one CPU slot
    records = wait_for(lambda: _all_final(ws, ids), timeout=600, what="four queued runs to finish")
    assert [r["status"] for r in records] == ["done"] * 4
    assert sorted(records, key=lambda r: r["started"]) == records
    assert _max_overlap(records) == 1
    assert len({r["worker"] for r in records}) == 1


def test_a_killed_run_frees_its_slot_and_a_stopped_queued_run_leaves_the_line(tmp_path):
    ws = tmp_path / "ws"
    first, second, third = _launch(tmp_path, ws, "kill", 3, "--slots-per-gpu", "1", student_epochs=300, batch=32)
    try:
        wait_for(lambda: (record(ws, first) or {}).get("status") == "running", what="the first run to start")
        shown = json_out(kdtui("queue", "--workspace", ws, "--json"))
        assert [(s["slot"], s["run"]) for s in shown["slots"]] == [("cpu.0", first)]
        assert [w["run"] for w in shown["waiting"]] == [second, third]
        # Runs in line have no process of their own, and reconciling leaves them queued.
        listed = {r["id"]: r for r in json_out(kdtui("runs", "list", "--workspace", ws, "--json"))}
        assert [listed[i]["status"] for i in (second, third)] == ["queued", "queued"]
        assert _queued_in_line(ws, second) and _queued_in_line(ws, third)

        worker = record(ws, first)["worker"]
        os.kill(record(ws, first)["pid"], signal.SIGKILL)  # the run's own process
        wait_for(lambda: (record(ws, second) or {}).get("status") == "running", what="the next run to take the slot")
        assert record(ws, second)["slot"] == "cpu.0" and record(ws, second)["worker"] == worker
        assert record(ws, third)["status"] == "queued"
        assert json_out(kdtui("runs", "show", first, "--workspace", ws, "--json"))["status"] == "interrupted"

        assert kdtui("runs", "stop", third, "--workspace", ws).returncode == 0
        assert record(ws, third)["status"] == "stopped" and record(ws, third)["started"] is None
        assert [w["run"] for w in json_out(kdtui("queue", "--workspace", ws, "--json"))["waiting"]] == []
    finally:
        for run_id in (second, third):
            kdtui("runs", "stop", run_id, "--workspace", ws)
        wait_for(lambda: (record(ws, second) or {}).get("status") in FINAL, what="the second run to stop")
    wait_for(lambda: not pid_alive(worker), timeout=60, what="the worker to exit once its line is empty")
    assert record(ws, third)["started"] is None, "a stopped queued run never starts"


def test_a_launch_while_every_slot_is_busy_is_served_by_the_busy_worker(tmp_path):
    ws = tmp_path / "ws"
    [busy] = _launch(tmp_path, ws, "busy", 1, student_epochs=12, batch=32)
    wait_for(lambda: (record(ws, busy) or {}).get("status") == "running", what="the first run to start")
    spec = write(tmp_path / "later.toml", tiny_spec("later", data="teacher_subset = 200", sweep="seed = [0, 1]"))
    result = kdtui("run", spec, "--detach", "--json", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert "no new worker" in result.stderr
    later = [r["id"] for r in json_out(result)]
    records = wait_for(lambda: _all_final(ws, [busy, *later]), timeout=600, what="both launches to finish")
    assert [r["status"] for r in records] == ["done"] * 3
    assert len({r["worker"] for r in records}) == 1


@pytest.mark.slow  # the killed-run test above covers a dead run's process; this one its worker's
def test_a_killed_worker_lets_its_run_finish_and_hands_the_line_on(tmp_path):
    ws = tmp_path / "ws"
    first, second = _launch(tmp_path, ws, "orphan", 2, student_epochs=6, batch=32)
    wait_for(lambda: (record(ws, first) or {}).get("status") == "running", what="the first run to start")
    worker = record(ws, first)["worker"]
    os.kill(worker, signal.SIGKILL)
    records = wait_for(lambda: _all_final(ws, [first, second]), timeout=600, what="both runs to finish")
    assert [r["status"] for r in records] == ["done", "done"]
    assert records[1]["worker"] != worker and records[1]["slot"] == "cpu.0"
    assert _max_overlap(records) == 1


def test_a_sweep_waits_in_one_line_file_not_one_file_per_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    ids = RunService(ws, store).submit([spec_from_dict({"name": f"p{k}", "data": {"dataset": "digits"}, "seed": k,
                                                        "device": "cpu"}) for k in range(50)], owner_pid=os.getpid())
    queue = RunQueue(ws)
    with queue.locked():
        queue.enqueue(store, ids, gpus=[])
        entries, _ = queue.waiting(store)
    assert [e["run"] for e in entries] == ids
    assert sorted(p.name for p in (ws.root / "queue").iterdir()) == ["line.json", "line.lock"]
    assert all(r["pid"] is None for r in map(store.get, ids))
    assert reconcile(RunStore(ws)) == [] and {store.get(i)["status"] for i in ids} == {"queued"}
    assert demand(entries, plan_slots([], 2)["cpu"]) == plan_slots([], 2)["cpu"]
