"""A run launched from a preset records the preset and its scale, and `kdtui report --preset`
selects by that record, never by a name a user's own spec can share."""
from __future__ import annotations

import json

from cli_helpers import kdtui
from kdtui.analysis.report import select_records
from kdtui.core import lifecycle
from kdtui.core.presets import get_preset
from kdtui.core.registry import RunStore
from kdtui.core.spec import expand_sweep, parse_spec
from kdtui.core.workspace import Workspace
from kdtui.runs.service import RunService

METRICS = {"test_agreement": 0.5, "train_agreement": 0.6, "test_acc": 0.7, "test_kl": 0.2}


def test_report_takes_the_preset_runs_and_not_a_user_spec_of_the_same_name(tmp_path):
    ws = Workspace(tmp_path / "ws", create=True)
    store = RunStore(ws)
    service = RunService(ws, store)
    preset = get_preset("e10")
    points = [p.resolved() for p in expand_sweep(preset.spec("tiny"), source="preset e10")][:2]
    from_preset = service.submit(points, preset=(preset.id, "tiny"))
    # A user's own spec whose name is exactly the preset spec's name, and a sweep point of it.
    name = preset.spec_name("tiny")
    own = service.submit([parse_spec(f'name = "{name}"\n').resolved(),
                          parse_spec(f'name = "{name}[seed=7]"\n').resolved()])
    for run_id in from_preset + own:
        lifecycle.start(store, run_id)
        lifecycle.done(store, run_id, METRICS)

    assert {(r["preset"], r["preset_scale"]) for r in map(store.get, from_preset)} == {(preset.id, "tiny")}
    assert {(r["preset"], r["preset_scale"]) for r in map(store.get, own)} == {(None, None)}
    found, _, _ = select_records(store, preset="E10")
    assert sorted(r["id"] for r in found) == sorted(from_preset)


def test_a_record_from_before_the_preset_field_is_still_matched_by_name(tmp_path):
    ws = Workspace(tmp_path / "ws", create=True)
    name = get_preset("e10").spec_name("tiny")
    folder = ws.root / "251101-000000-0ld0"
    folder.mkdir()
    old = {"id": folder.name, "name": f"{name}[seed=0]", "status": "done", "metrics": METRICS, "spec": {},
           "created": "2025-11-01T00:00:00", "schema_version": 1}
    (folder / "record.json").write_text(json.dumps(old))
    assert kdtui("runs", "reindex", "--workspace", ws.root).returncode == 0
    found, _, _ = select_records(RunStore(ws), preset="e10", scale="tiny")
    assert [r["id"] for r in found] == [folder.name]


def test_run_preset_records_it(tmp_path, monkeypatch):
    """`kdtui run --preset ... --detach`, in this process with no worker started: the runs wait in the
    line, and their records name the preset and scale."""
    from typer.testing import CliRunner  # click's runner cannot drive typer's commands (typer vendors click)

    from kdtui.cli import app
    from kdtui.runs.executors.launcher import QueueExecutor

    monkeypatch.setattr(QueueExecutor, "start_workers", lambda self: [])
    ws = tmp_path / "ws"
    result = CliRunner().invoke(app, ["run", "--preset", "E10", "--scale", "tiny", "--detach", "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    records = RunStore(ws).all()
    assert len(records) == get_preset("e10").run_count("tiny")
    assert {(r["preset"], r["preset_scale"]) for r in records} == {("e10", "tiny")}
