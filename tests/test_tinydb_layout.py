"""Every file of a workspace's index is a stock TinyDB database, and an index in the layout kdtui
wrote before (layout 2: shards of rows by run id) migrates with nothing lost."""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import pytest
from tinydb import Query, TinyDB

from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
LISTED = ("epoch", "train_agreement", "test_agreement", "test_acc", "teacher_test_acc")


def _records(n: int) -> list[dict]:
    return [{"id": f"251203-1000{k:02d}-{k:04x}", "name": f"kd-τ[seed={k % 3}]", "status": ("done", "failed", "running")[k % 3],
             "spec": {"seed": k % 3, "distill": {"temperature": float(1 + k % 4)}},
             "metrics": {"test_agreement": round(k / (n + 1), 6), "test_kl": k / 10, "epoch": k, "test_acc": 0.5},
             "teachers": [{"key": f"t{k}"}], "created": 1.76e9 + k, "host": "elsewhere", "pid": 10 + k}
            for k in range(n)]


def _index_files(ws: Workspace) -> list[Path]:
    return sorted((ws.root / "kdtui.index").glob("*.json"))


def test_every_index_file_is_a_stock_tinydb_database(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    records = _records(40)
    store.add_many(records[:30])
    for record in records[30:]:
        store.add(record)
    store.update(records[5]["id"], status="stopped")
    store.remove(records[7]["id"])
    kept = {r["id"]: r for r in records if r["id"] != records[7]["id"]}

    root = TinyDB(ws.registry_path)
    assert root.tables() == {"meta"}
    (meta,) = root.table("meta").all()
    assert meta["shards"] == 64 and meta["generation"] >= 12 and meta["index"] == "kdtui.index"
    root.close()

    files = _index_files(ws)
    assert 0 < len(files) <= 64  # a shard's file is written once a run lands in it
    found: dict[str, dict] = {}
    for path in files:
        db = TinyDB(path)
        assert db.tables() <= {"runs"}
        for doc in db.table("runs").all():
            assert isinstance(doc.doc_id, int)
            assert doc["id"] not in found
            found[doc["id"]] = doc
        db.close()
    assert set(found) == set(kept)

    for run_id, record in kept.items():
        shard = f"{zlib.crc32(run_id.encode()) % 64:02x}.json"
        db = TinyDB(ws.root / "kdtui.index" / shard)
        (row,) = db.table("runs").search(Query().id == run_id)
        assert row["metrics"] == {k: v for k, v in record["metrics"].items() if k in LISTED}
        assert row["status"] == ("stopped" if run_id == records[5]["id"] else record["status"])
        db.close()

    high = set()
    for path in files:
        db = TinyDB(path)
        high |= {doc["id"] for doc in db.table("runs").search(Query().metrics.test_agreement > 0.5)}
        db.close()
    assert high == {i for i, r in kept.items() if r["metrics"]["test_agreement"] > 0.5} and high


def _write_layout2(ws: Workspace, records: list[dict]) -> dict[str, dict]:
    """An index as kdtui wrote it before, with plain json: the root holds its numbers at the top
    level, each shard is {run id: row}. Returns the rows by id."""
    ws.root.mkdir(parents=True, exist_ok=True)  # Workspace() may have made it
    shards: dict[str, dict] = {f"{k:02x}": {} for k in range(64)}
    rows = {}
    for record in records:
        folder = ws.root / record["id"]
        folder.mkdir()
        (folder / "record.json").write_text(json.dumps({**record, "schema_version": 1}))
        row = {k: v for k, v in record.items() if k not in ("spec", "teachers")}
        row["metrics"] = {k: v for k, v in record["metrics"].items() if k in LISTED}
        row["schema_version"] = 1
        rows[record["id"]] = row
        shards[f"{zlib.crc32(record['id'].encode()) % 64:02x}"][record["id"]] = row
    (ws.root / "kdtui.index").mkdir()
    for name, table in shards.items():
        (ws.root / "kdtui.index" / f"{name}.json").write_text(json.dumps(table))
    (ws.root / "kdtui.json").write_text(json.dumps({"kdtui_registry": 2, "shards": 64, "generation": 7,
                                                    "index": "kdtui.index"}))
    return rows


def _stock_rows(ws: Workspace) -> dict[str, dict]:
    rows = {}
    for path in _index_files(ws):
        db = TinyDB(path)
        assert db.tables() <= {"runs"}
        rows.update((doc["id"], dict(doc)) for doc in db.table("runs").all())
        db.close()
    return rows


def test_a_layout2_index_reads_as_it_is_and_the_first_write_migrates_it(tmp_path):
    ws = Workspace(tmp_path / "ws")
    records = _records(25)
    rows = _write_layout2(ws, records)
    before = {p.name: p.read_bytes() for p in [ws.registry_path, *_index_files(ws)]}

    store = RunStore(ws)
    assert {r["id"]: r for r in store.all()} == rows
    assert store.get(records[3]["id"])["spec"] == records[3]["spec"]
    assert {p.name: p.read_bytes() for p in [ws.registry_path, *_index_files(ws)]} == before  # reads write nothing

    changed = records[4]["id"]
    store.update(changed, status="stopped")
    root = json.loads(ws.registry_path.read_text())
    assert list(root) == ["meta"] and list(root["meta"].values())[0]["generation"] == 8
    after = _stock_rows(ws)
    assert set(after) == set(rows)
    assert {i: r for i, r in after.items() if i != changed} == {i: r for i, r in rows.items() if i != changed}
    assert after[changed]["status"] == "stopped" and after[changed]["metrics"] == rows[changed]["metrics"]
    assert {r["id"]: r for r in RunStore(ws).all()} == after


def test_reindex_migrates_a_layout2_index(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rows = _write_layout2(ws, _records(12))
    RunStore(ws).reindex()
    assert _stock_rows(ws) == rows
    (meta,) = json.loads(ws.registry_path.read_text())["meta"].values()
    assert meta["kdtui_registry"] == 3 and meta["generation"] == 8


def test_a_reader_meeting_shards_of_both_layouts_mid_migration_reads_every_row(tmp_path):
    """The first write replaces the shards, then the root: a reader in between sees a layout-2
    root over shards already in the new layout, or the other way round."""
    ws = Workspace(tmp_path / "ws")
    rows = _write_layout2(ws, _records(20))
    old_root = ws.registry_path.read_bytes()
    old_shards = {p.name: p.read_bytes() for p in _index_files(ws)}
    RunStore(ws).update(next(iter(rows)), status="done")
    rows = {r["id"]: r for r in RunStore(ws).all()}
    ws.registry_path.write_bytes(old_root)  # new shards, old root
    assert {r["id"]: r for r in RunStore(ws).all()} == rows
    for name, raw in list(old_shards.items())[::2]:  # half the shards old again (their rows unchanged but one)
        (ws.root / "kdtui.index" / name).write_bytes(raw)
    seen = {r["id"] for r in RunStore(ws).all()}
    assert seen == set(rows)


@pytest.mark.parametrize("damaged", ['{"runs": [1, 2]}', '{"runs": {"1": 5}}', "[]", "{not json"])
def test_a_damaged_shard_asks_for_a_reindex(tmp_path, damaged):
    from kdtui.core.registry import RegistryNeedsReindex

    ws = Workspace(tmp_path / "ws")
    RunStore(ws).add_many(_records(3))
    _index_files(ws)[0].write_text(damaged)
    with pytest.raises(RegistryNeedsReindex, match="reindex"):
        RunStore(ws).all()


def test_kdtui_uses_no_private_tinydb_api():
    pattern = re.compile(r"\._update_table|\._read_table|\._storage|tinydb\.\w+\._")
    hits = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "kdtui").rglob("*.py"))
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_the_private_api_check_sees_a_use():
    """The pattern above finds what it is for, so that its empty result means something."""
    pattern = re.compile(r"\._update_table|\._read_table|\._storage|tinydb\.\w+\._")
    assert pattern.search("self.db.table(name)._update_table(replace)")
    assert pattern.search("tinydb.table._x") and pattern.search("db.table('runs').all()") is None
