"""Issue 18, build 10: a stopped run keeps the metrics of its last finished epoch
(`last_epoch_metrics`), and `runs list` / `runs show` show them marked with that epoch."""
from __future__ import annotations

import json

from cli_helpers import fake_run, kdtui, tiny_spec

from kdtui.core.record import shown_metrics
from kdtui.core.registry import RunStore
from kdtui.core.workspace import STOP_FILE, Workspace


def test_a_run_stopped_after_an_epoch_records_that_epochs_metrics(tmp_path):
    """A real tiny run in this process, asked to stop once its first student epoch is written."""
    from kdtui.core.spec import parse_spec
    from kdtui.runs.execute import execute
    from kdtui.runs.service import RunService

    ws = Workspace(tmp_path / "ws", create=True)
    store = RunStore(ws)
    [run_id] = RunService(ws, store).submit([parse_spec(tiny_spec("stopme", student_epochs=6)).resolved()])

    def on_event(event: dict) -> None:
        if event.get("type") == "epoch" and event.get("phase") == "student" and event.get("epoch", 0) >= 1:
            (ws.run_dir(run_id) / STOP_FILE).touch()

    final = execute(ws, store, run_id, install_signals=False, on_event=on_event)
    assert final["status"] == "stopped" and not final["metrics"]
    # the reference: the last student epoch line of the log, read here by hand
    lines = [json.loads(line) for line in ws.events_path(run_id).read_text().splitlines()]
    last = [e for e in lines if e["type"] == "epoch" and e.get("phase") == "student"][-1]
    assert 1 <= last["epoch"] < 6
    on_disk = json.loads((ws.run_dir(run_id) / "record.json").read_text())
    assert on_disk["last_epoch_metrics"] == {"epoch": last["epoch"], **last["metrics"]}
    assert store.get(run_id)["last_epoch_metrics"]["epoch"] == last["epoch"]  # in the index too
    listing = kdtui("runs", "list", "--workspace", ws.root).stdout
    assert f"stopped (epoch {last['epoch']})" in listing
    assert f"{last['metrics']['test_agreement']:.4f}" in listing


def test_show_and_list_mark_a_stopped_runs_last_epoch(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261203-120000-cc01", status="stopped")  # no field: runs show reads the history
    fake_run(ws, "261203-120001-cc02", status="stopped",
             last_epoch_metrics={"epoch": 1, "train_agreement": 0.5, "test_agreement": 0.4321, "test_acc": 0.3})
    fake_run(ws, "261203-120002-cc03", status="stopped")  # stopped and nothing finished
    (ws / "261203-120002-cc03" / "events.jsonl").write_text("")
    fake_run(ws, "261203-120003-cc04")
    rows = {line.split()[0]: line for line in kdtui("runs", "list", "--workspace", ws).stdout.splitlines()[1:]}
    assert "stopped (epoch 1)" in rows["cc02"] and "0.4321" in rows["cc02"]
    assert "(epoch" not in rows["cc01"] and "—" in rows["cc01"]  # a list reads no history
    assert "(epoch" not in rows["cc03"] and "(epoch" not in rows["cc04"] and "0.8500" in rows["cc04"]
    show = kdtui("runs", "show", "cc01", "--workspace", ws).stdout
    # fake_run's history: epoch 2 test agreement 0.85 (the last); the record has no final metrics
    assert "metrics of epoch 2, its last" in show and "0.8500" in show.split("id:")[0]
    assert "metrics of epoch" not in kdtui("runs", "show", "cc03", "--workspace", ws).stdout
    assert "metrics of epoch" not in kdtui("runs", "show", "cc04", "--workspace", ws).stdout


def test_shown_metrics_prefers_final_metrics():
    record = {"status": "done", "metrics": {"test_agreement": 0.9}, "last_epoch_metrics": {"epoch": 3, "x": 1}}
    assert shown_metrics(record) == ({"test_agreement": 0.9}, None)
    stopped = {"status": "stopped", "metrics": {}, "last_epoch_metrics": {"epoch": 3, "test_agreement": 0.7}}
    assert shown_metrics(stopped) == ({"test_agreement": 0.7}, 3)
    assert shown_metrics({"status": "stopped", "history": [{"epoch": 0, "test_agreement": 0.1}]}) == ({}, None)
