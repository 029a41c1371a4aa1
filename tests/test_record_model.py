"""The run record model (kdtui/core/record.py) against the code that writes records, docs/records.md,
records of older versions, records of the wrong shape and fields the model does not know."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import get_type_hints

import pytest

from cli_helpers import fake_run, json_out, kdtui, tiny_spec, write
from kdtui.core import lifecycle
from kdtui.core.record import FIELDS, RunRecord, record_problem
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
# Calls that write fields of a record: the registry's writes and lifecycle's transitions.
WRITE_CALLS = {"update", "update_many", "put", "add", "add_many", "take", "start", "done", "fail", "stop",
               "requeue", "requeue_many", "end", "interrupt"}


def documented_fields() -> set[str]:
    """The fields docs/records.md documents: the first cell of each row of its tables headed
    `| field |` (other tables, such as the keys of the environment block, are not fields)."""
    fields, header = set(), ""
    for line in (REPO / "docs" / "records.md").read_text().splitlines():
        if not line.startswith("|"):
            header = ""
        elif not header:
            header = line
        elif header.startswith("| field |"):
            fields |= set(re.findall(r"^\| `([a-z_]+)` \|", line))
    return fields


def written_fields() -> set[str]:
    """Every field name the code hands to a record write: keyword arguments of registry writes and
    lifecycle calls in the modules that change runs, the keys of a new record, and the fields the
    Ray driver copies back."""
    sources = [*sorted((REPO / "kdtui" / "runs").rglob("*.py")), REPO / "kdtui" / "core" / "lifecycle.py"]
    names: set[str] = set()
    for path in sources:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_CALLS:
                names |= {k.arg for k in node.keywords if k.arg}
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FINAL_FIELDS"
                                                    for t in node.targets):
                names |= {elt.value for elt in node.value.elts}
    from kdtui.core.spec import parse_spec
    names |= set(lifecycle.new_record("x", parse_spec('name = "x"\n').resolved()))
    return names


def test_the_model_the_validator_and_the_docs_list_the_same_fields():
    assert set(get_type_hints(RunRecord)) == set(FIELDS)
    assert documented_fields() == set(FIELDS)


def test_every_field_the_code_writes_is_in_the_model():
    assert written_fields() - set(FIELDS) == set()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A tiny run to its end through `kdtui run`: its record.json as written."""
    root = tmp_path_factory.mktemp("real")
    spec = write(root / "tiny.toml", tiny_spec("model", student_epochs=1))
    result = kdtui("run", spec, "--workspace", root / "ws", "--json")
    assert result.returncode == 0, result.stderr
    record = json_out(result)  # one run: its record
    return json.loads((root / "ws" / record["id"] / "record.json").read_text())


def test_a_real_run_writes_only_documented_fields_of_the_right_types(real_run):
    assert set(real_run) - documented_fields() == set()
    assert record_problem(real_run) is None
    assert real_run["status"] == "done" and real_run["preset"] is None


# -- older records --------------------------------------------------------------------------------

def old_record(run_id: str) -> dict:
    """A record as the first versions wrote it: ISO times, no schema_version, none of the later fields."""
    return {"id": run_id, "name": "old", "status": "done", "spec": {"seed": 0}, "spec_hash": "a" * 64,
            "group_hash": "b" * 64, "metrics": {"test_agreement": 0.5, "test_acc": 0.75}, "teachers": [],
            "device": "cpu", "host": "elsewhere", "pid": 12, "created": "2025-11-28T10:00:00",
            "started": "2025-11-28T10:00:01", "finished": "2025-11-28T10:05:00", "error": None}


def test_a_record_of_an_older_version_still_reads(tmp_path):
    ws = tmp_path / "ws"
    folder = ws / "251128-100000-0ld1"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(old_record(folder.name)))
    result = kdtui("runs", "reindex", "--workspace", ws)
    assert result.returncode == 0 and "rebuilt" in result.stdout, result.stderr
    listed = kdtui("runs", "list", "--workspace", ws)
    assert listed.returncode == 0 and "0ld1" in listed.stdout and "done" in listed.stdout
    shown = json_out(kdtui("runs", "show", "0ld1", "--workspace", ws, "--json"))
    assert shown["metrics"] == {"test_agreement": 0.5, "test_acc": 0.75} and shown["created"] == "2025-11-28T10:00:00"
    # A later write keeps it whole and stamps the current shape.
    lifecycle.requeue(RunStore(ws), folder.name)
    again = json.loads((folder / "record.json").read_text())
    assert again["status"] == "queued" and again["spec"] == {"seed": 0} and again["schema_version"] == 2


# -- records of the wrong shape ---------------------------------------------------------------------

BAD = {"251201-000000-bad1": {"metrics": "x"}, "251201-000000-bad2": {"status": 12345},
       "251201-000000-bad3": {"teachers": {"a": 1}}, "251201-000000-bad4": {"pid": "12"}}


@pytest.fixture
def damaged(tmp_path) -> Path:
    """A workspace with one good run and, in their folders, records whose fields have wrong types."""
    ws = tmp_path / "ws"
    fake_run(ws, "251201-000000-good")
    for run_id, wrong in BAD.items():
        folder = ws / run_id
        folder.mkdir()
        (folder / "record.json").write_text(json.dumps({**old_record(run_id), **wrong}))
    return ws


def test_reindex_skips_records_of_the_wrong_types_naming_each(damaged):
    result = kdtui("runs", "reindex", "--workspace", damaged)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    report = result.stdout.replace("\n", " ")
    for run_id, wrong in BAD.items():
        field = next(iter(wrong))
        assert re.search(rf"{run_id}: not a run record: it field '{field}' is", report), report
    assert {r["id"] for r in RunStore(damaged).all()} == {"251201-000000-good"}


def test_lists_and_views_survive_rows_of_the_wrong_types_in_the_index(damaged):
    """An index built before records were checked: the bad rows are in it. Nothing breaks."""
    store = RunStore(damaged)
    for run_id in BAD:
        store.add({**old_record(run_id)})
    for shard in (damaged / "kdtui.index").glob("*.json"):  # damage the rows as the files are damaged
        text = json.loads(shard.read_text())

        def damage(node):
            if isinstance(node, dict):
                if node.get("id") in BAD:
                    node.update(BAD[node["id"]])
                for value in node.values():
                    damage(value)
        damage(text)
        shard.write_text(json.dumps(text))
    listed = kdtui("runs", "list", "--workspace", damaged)
    assert listed.returncode == 0, listed.stderr
    assert "good" in listed.stdout and "bad1" not in listed.stdout
    assert json_out(kdtui("runs", "list", "--workspace", damaged, "--json"))[0]["id"] == "251201-000000-good"
    shown = kdtui("runs", "show", "bad1", "--workspace", damaged)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
    assert kdtui("runs", "show", "good", "--workspace", damaged).returncode == 0
    assert RunStore(damaged).get("251201-000000-bad2") is None


def test_a_writer_cannot_store_a_field_of_the_wrong_type(tmp_path):
    store = RunStore(tmp_path / "ws")
    with pytest.raises(ValueError, match="metrics"):
        store.add({"id": "r", "metrics": "x"})
    store.add({"id": "r"})
    with pytest.raises(ValueError, match="status"):
        store.update("r", status=12345)
    assert store.get("r")["status"] == "queued"


# -- fields the model does not know -----------------------------------------------------------------

def test_unknown_fields_stay_in_record_json_and_out_of_the_index(tmp_path):
    ws = Workspace(tmp_path / "ws")
    folder = ws.root / "251201-000000-huge"
    folder.mkdir(parents=True)
    huge = "z" * 5_000_000
    (folder / "record.json").write_text(json.dumps({**old_record(folder.name), "from_the_future": huge}))
    assert kdtui("runs", "reindex", "--workspace", ws.root).returncode == 0
    index_bytes = sum(p.stat().st_size for p in (ws.root / "kdtui.index").glob("*.json"))
    assert index_bytes < 50_000  # the row, not the 5 MB field
    row = RunStore(ws).all()[0]
    assert "from_the_future" not in row
    # A view of the one run shows it, and writes of the record keep it.
    assert RunStore(ws).get(folder.name)["from_the_future"] == huge
    lifecycle.requeue(RunStore(ws), folder.name)
    assert json.loads((folder / "record.json").read_text())["from_the_future"] == huge
    assert "from_the_future" not in RunStore(ws).all()[0]
