"""The notebook API (`kdtui.open_workspace`) on a workspace of done, failed and running runs,
checked against what the workspace holds and against `kdtui runs export`."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tinydb import Query

import kdtui
from kdtui.core.workspace import WorkspaceError
from notebook_workspace import EPOCHS, agreement, build

from cli_helpers import kdtui as run_kdtui

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "ws"
    return root, build(root)


def _flat(spec: dict, prefix: str = "") -> dict:
    """Dotted keys of a nested spec, lists comma-joined, name and sweep left out (written out here,
    not taken from kdtui)."""
    out = {}
    for key, value in spec.items():
        if not prefix and key in ("name", "sweep"):
            continue
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = ", ".join(map(str, value)) if isinstance(value, list) else value
    return out


def _snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_api_imports_neither_torch_nor_textual(sweep):
    root, _ = sweep
    code = textwrap.dedent(f"""
        import sys, kdtui
        ws = kdtui.open_workspace({str(root)!r})
        ws.runs(where="τ=4"); ws.frame(); ws.histories(); ws.history(ws.runs()[0]["id"])
        print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "textual"}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_open_workspace_finds_it_as_the_cli_does_and_never_creates_one(sweep, tmp_path, monkeypatch):
    root, records = sweep
    monkeypatch.setenv("KDTUI_HOME", str(root))
    assert kdtui.open_workspace().path == root
    monkeypatch.delenv("KDTUI_HOME")
    monkeypatch.chdir(root.parent)  # ./runs is the default
    with pytest.raises(WorkspaceError, match="no workspace"):
        kdtui.open_workspace()
    assert not (root.parent / "runs").exists()
    (root.parent / "runs").symlink_to(root)
    assert {r["id"] for r in kdtui.open_workspace().runs()} == set(records)


def test_runs_select_as_runs_list_does_and_by_spec_values(sweep):
    root, records = sweep
    ws = kdtui.open_workspace(root)
    by_created = sorted(records.values(), key=lambda r: r["created"])
    assert [r["id"] for r in ws.runs()] == [r["id"] for r in by_created]
    assert {r["status"] for r in ws.runs()} == {"done", "failed", "running"}
    assert all("spec" not in r for r in ws.runs())
    assert ws.runs(details=True) == by_created
    assert [r["id"] for r in ws.runs(status="done")] == [r["id"] for r in by_created if r["status"] == "done"]
    four = [r["id"] for r in by_created if r["spec"]["distill"]["temperature"] == 4.0]
    assert [r["id"] for r in ws.runs(where="τ=4")] == four
    assert [r["id"] for r in ws.runs(where="distill.temperature=4.0")] == four
    assert [r["id"] for r in ws.runs(status="done", where="temperature=4 seed=1")] == [
        r["id"] for r in by_created if r["spec"]["distill"]["temperature"] == 4.0 and r["spec"]["seed"] == 1]
    assert ws.runs(where="τ=4 status:failed", details=True) == [r for r in by_created if r["status"] == "failed"]
    assert ws.runs(where="τ=3") == []
    assert [r["id"] for r in ws.runs(name="distill.temperature=8")] == [r["id"] for r in by_created if r["status"] == "running"]


def test_search_takes_a_tinydb_query_over_whole_records(sweep):
    root, records = sweep
    ws = kdtui.open_workspace(root)
    found = {r["id"] for r in ws.search(Query().metrics.test_agreement > 0.84)}
    assert found == {i for i, r in records.items() if r["metrics"].get("test_agreement", 0) > 0.84} and found
    # Keys the index rows leave out (the spec, the unlisted metrics) are searched too.
    assert {r["id"] for r in ws.search(Query().spec.distill.temperature == 8.0)} == {
        i for i, r in records.items() if r["status"] == "running"}
    assert {r["id"] for r in ws.search(Query().metrics.test_kl < 0.25)} == {
        i for i, r in records.items() if r["status"] == "done"}


def test_history_is_the_runs_epochs(sweep):
    root, records = sweep
    ws = kdtui.open_workspace(root)
    for run_id, record in records.items():
        t, seed = record["spec"]["distill"]["temperature"], record["spec"]["seed"]
        history = ws.history(run_id[-4:])  # the short id, as every command takes it
        last = EPOCHS if record["status"] == "done" else 1
        assert [h["epoch"] for h in history] == list(range(last + 1))
        assert [h["test_agreement"] for h in history] == [agreement(t, seed, e) for e in range(last + 1)]


def test_frame_matches_runs_export(sweep, monkeypatch):
    root, records = sweep
    exported = json.loads(run_kdtui("runs", "export", "--format", "json", "--workspace", root).stdout)
    labels = {row["id"]: row["label"] for row in csv.DictReader(io.StringIO(
        run_kdtui("runs", "export", "--format", "csv", "--all-keys", "--workspace", root).stdout))}
    frame = kdtui.open_workspace(root).frame()
    assert list(frame["id"]) == [r["id"] for r in exported]
    spec_keys = list(_flat(exported[0]["spec"]))
    metric_names = {m for r in exported for m in r["metrics"]}
    assert set(frame.columns) == {"id", "label", "name", "status", "group_hash", "spec_hash", "created", "tags",
                                  "note", *spec_keys, *metric_names}
    assert [c for c in frame.columns if c in spec_keys] == spec_keys  # spec order
    for row, record in zip(frame.to_dict("records"), exported):
        assert row["label"] == labels[record["id"]]
        for key in ("name", "status", "group_hash", "spec_hash", "created"):
            assert row[key] == record[key]
        for key, value in _flat(record["spec"]).items():
            assert row[key] == value, key
        for name in metric_names:
            if name in record["metrics"]:
                assert row[name] == record["metrics"][name]
            else:
                assert row[name] is None or math.isnan(row[name])
    assert frame["test_agreement"].dtype.kind == "f" and frame["seed"].dtype.kind == "i"
    assert list(kdtui.open_workspace(root).frame(where="τ=1")["label"]) == [
        "seed=0", "seed=1", "seed=2"]  # labels say what differs among the runs selected


def test_histories_are_long_form(sweep):
    root, records = sweep
    ws = kdtui.open_workspace(root)
    long = ws.histories()
    assert list(long.columns[:3]) == ["id", "label", "epoch"]
    assert len(long) == sum(EPOCHS + 1 if r["status"] == "done" else 2 for r in records.values())
    for run_id, record in records.items():
        mine = long[long["id"] == run_id]
        t, seed = record["spec"]["distill"]["temperature"], record["spec"]["seed"]
        assert list(mine["test_agreement"]) == [agreement(t, seed, e) for e in mine["epoch"]]
    two = ws.histories([next(iter(records))[-4:], list(records)[3]])
    assert set(two["id"]) == {next(iter(records)), list(records)[3]}


def test_without_pandas_frame_says_how_to_get_it_in_one_line(sweep, monkeypatch):
    root, _ = sweep
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails as if not installed
    ws = kdtui.open_workspace(root)
    for call in (ws.frame, ws.histories):
        with pytest.raises(ImportError) as raised:
            call()
        assert "\n" not in str(raised.value) and "pip install 'kdtui[notebook]'" in str(raised.value)
    assert ws.runs()  # the rest needs no pandas


def test_the_api_writes_nothing_and_takes_no_lock(sweep, monkeypatch):
    from kdtui.core.registry import RunStore

    def no_lock(self):
        raise AssertionError("the API took the registry's lock")

    monkeypatch.setattr(RunStore, "_lock_held", no_lock)  # every write and every lock goes through it
    root, _ = sweep
    before = _snapshot(root)
    ws = kdtui.open_workspace(root)
    ws.runs(details=True), ws.runs(where="τ=4"), ws.search(Query().status == "done"), ws.frame(), ws.histories()
    ws.history(ws.runs()[0]["id"])
    assert _snapshot(root) == before


def test_a_bad_where_is_one_line(sweep):
    from kdtui.analysis.filters import FilterError

    with pytest.raises(FilterError, match="needs a key and a value"):
        kdtui.open_workspace(sweep[0]).runs(where="=4")


def test_a_running_run_owned_by_this_process_stays_running(sweep):
    root, records = sweep
    (running,) = [r for r in kdtui.open_workspace(root).runs() if r["status"] == "running"]
    assert running["pid"] == os.getpid()
