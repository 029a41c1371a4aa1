"""The registry on a real disk with real processes: concurrent writers, SIGKILL mid-write, prefix
resolution, stale-run reconciliation and the history join."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kdtui.core.eventlog import EventWriter
from kdtui.core.lifecycle import reconcile
from kdtui.core.registry import (
    AmbiguousRunId,
    RunExists,
    RunNotFound,
    RunStore,
    shard_of,
    record_with_history,
)
from kdtui.core.workspace import Workspace, resolve_workspace

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _raw_docs(store: RunStore) -> list[dict]:
    """The index parsed with plain json, as another tool would: the root names the shards."""
    (meta,) = json.loads(store.path.read_text())["meta"].values()
    docs = []
    for shard in sorted((store.path.parent / meta["index"]).glob("*.json")):
        docs.extend(json.loads(shard.read_text())["runs"].values())
    return docs


def _temp_files(store: RunStore) -> list[str]:
    return [n for folder in (store.path.parent, store.index_dir) if folder.exists()
            for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]


# Workers wait for a start file so they all write at the same moment.
WORKER_PRELUDE = """
    import os, sys, time
    from pathlib import Path
    from kdtui.core.registry import RunStore
    registry, start, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    worker = int(sys.argv[4])
    store = RunStore(registry)
    ready.touch()
    deadline = time.monotonic() + 30
    while not start.exists():
        if time.monotonic() > deadline:
            sys.exit("start file never appeared")
        time.sleep(0.001)
"""


def _run_workers(tmp_path: Path, store: RunStore, script: Path, n: int, *, watch=None) -> None:
    start = tmp_path / "start"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(store.path), str(start),
                          str(tmp_path / f"ready-{i}"), str(i)],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{i}").exists() for i in range(n)):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.005)
    start.touch()
    while watch is not None and any(p.poll() is None for p in procs):
        watch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


def test_concurrent_adds_lose_nothing(tmp_path):
    store = RunStore(tmp_path / "ws")
    script = _script(tmp_path, "adder.py", WORKER_PRELUDE + """
    for i in range(25):
        store.add({"id": f"w{worker}-{i:02d}", "name": f"worker {worker}", "status": "done",
                   "metrics": {"test_agreement": i / 25}})
    """)
    counts = []
    reader = RunStore(store.path)

    def watch():  # a reader with no lock sees whole files only, and never fewer records
        counts.append(len(reader.all()))

    _run_workers(tmp_path, store, script, 8, watch=watch)
    records = store.all()
    assert len(records) == 200
    assert {r["id"] for r in records} == {f"w{w}-{i:02d}" for w in range(8) for i in range(25)}
    assert counts == sorted(counts)
    assert len(_raw_docs(store)) == 200
    assert _temp_files(store) == []


def test_concurrent_updates_lose_nothing(tmp_path):
    store = RunStore(tmp_path / "ws")
    ids = [f"run-{k}" for k in range(6)]
    for run_id in ids:
        store.add({"id": run_id, "status": "running"})
    script = _script(tmp_path, "updater.py", WORKER_PRELUDE + """
    ids = [f"run-{k}" for k in range(6)]
    for rnd in range(3):
        for run_id in ids:
            store.update(run_id, **{f"field_{worker}": rnd})
    # each worker also owns one record outright
    store.update(ids[worker], status="done", metrics={"by": worker})
    """)
    _run_workers(tmp_path, store, script, 6)
    for k, record in enumerate(sorted(store.all(details=True), key=lambda r: r["id"])):
        assert record["id"] == ids[k]
        for worker in range(6):
            assert record[f"field_{worker}"] == 2, (record["id"], worker)
        assert record["status"] == "done" and record["metrics"] == {"by": k}


def test_writer_killed_mid_write_leaves_a_whole_registry(tmp_path):
    store = RunStore(tmp_path / "ws")
    originals = [f"orig-{k:02d}" for k in range(20)]
    for run_id in originals:
        store.add({"id": run_id, "status": "done", "spec": {"seed": 1}})
    size = 1_500_000
    store.add({"id": "big", "payload": "a" * size, "n": -1})
    script = _script(tmp_path, "writer.py", """
        import random, string, sys
        from kdtui.core.registry import RunStore
        store = RunStore(sys.argv[1])
        size, tag = int(sys.argv[2]), sys.argv[3]
        print("ready", flush=True)
        i = 0
        while True:
            store.update("big", payload=random.choice(string.ascii_letters) * size, n=i)
            store.add({"id": f"{tag}-{i}", "status": "done"})
            print(i, flush=True)  # committed: the rename happened before this line
            i += 1
    """)
    rng = random.Random(1234)
    committed: set[str] = set()
    for attempt in range(10):
        proc = subprocess.Popen([sys.executable, str(script), str(store.path), str(size), f"k{attempt}"],
                                env=_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        first = proc.stdout.readline()  # one whole round committed (a loaded machine may be slow to it)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        out = first + out
        assert proc.returncode == -signal.SIGKILL
        committed |= {f"k{attempt}-{line}" for line in out.split() if line.isdigit()}

        docs = _raw_docs(store)  # parses: no partial file was renamed into place
        ids = {d["id"] for d in docs}
        assert set(originals) <= ids
        assert committed <= ids
        big = _folder_record(store.workspace, "big")  # an unknown field: in record.json, not the index
        assert len(big["payload"]) == size and len(set(big["payload"])) == 1
    assert committed, "the writer never committed anything before being killed"
    # A killed writer may leave its temp file behind; the next locked write removes it.
    store.update("orig-00", status="done")
    assert _temp_files(store) == []
    assert set(originals) | committed <= {r["id"] for r in store.all()}


def test_writes_replace_the_file_never_rewrite_it(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "ws")
    store.add({"id": "a", "status": "done"})
    before = store.path.read_bytes()
    with open(store.path, "rb") as old:  # a reader that opened the file before the write
        inode = os.fstat(old.fileno()).st_ino
        store.add({"id": "b"})
        assert old.read() == before  # still the whole old file, not a truncated one
    assert os.stat(store.path).st_ino != inode

    # Dying after the temp file is written but before the rename leaves the old file untouched.
    def die(*args):
        raise KeyboardInterrupt

    before = store.path.read_bytes()
    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        store.update("a", status="failed")
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert _temp_files(store) == []  # cleaned up on the way out
    assert store.get("a")["status"] == "done"


def test_add_get_update_remove_and_errors(tmp_path):
    store = RunStore(Workspace(tmp_path / "ws"))
    doc = store.add({"id": "251128-101010-abcd", "name": "digits-selfdistill", "created": 2.0,
                     "history": [{"epoch": 1}], "group_hash": "g123"})
    store.add({"id": "251128-101011-beef", "name": "Other", "created": 1.0, "status": "done",
               "group_hash": "g999"})
    assert doc["schema_version"] == 2 and doc["status"] == "queued" and "history" not in doc
    for raw in _raw_docs(store):
        assert raw["schema_version"] == 2
        assert "history" not in raw
    with pytest.raises(RunExists):
        store.add({"id": "251128-101010-abcd"})
    with pytest.raises(ValueError):
        store.add({"name": "no id"})
    assert [r["id"] for r in store.all()] == ["251128-101011-beef", "251128-101010-abcd"]
    assert store.get("251128-101010-abcd")["name"] == "digits-selfdistill"
    assert store.get("nope") is None
    updated = store.update("251128-101010-abcd", status="running", pid=1, history=[1])
    assert updated["status"] == "running" and "history" not in updated
    assert [r["id"] for r in store.find(status="done")] == ["251128-101011-beef"]
    assert [r["id"] for r in store.find(status=["done", "running"])] == [
        "251128-101011-beef", "251128-101010-abcd"]
    assert [r["id"] for r in store.find(name="SELFDIST")] == ["251128-101010-abcd"]
    assert [r["id"] for r in store.find(group="g1")] == ["251128-101010-abcd"]
    with pytest.raises(RunNotFound):
        store.update("nope", status="done")
    store.remove("251128-101011-beef")
    assert [r["id"] for r in store.all()] == ["251128-101010-abcd"]
    with pytest.raises(RunNotFound):
        store.remove("251128-101011-beef")


def test_prefix_resolution(tmp_path):
    store = RunStore(tmp_path / "ws")
    for run_id in ("251128-101010-abcd", "251128-101010-abef", "251129-090000-0001"):
        store.add({"id": run_id})
    assert store.resolve("251129")["id"] == "251129-090000-0001"
    assert store.resolve("251128-101010-abc")["id"] == "251128-101010-abcd"
    assert store.resolve("251128-101010-abef")["id"] == "251128-101010-abef"
    with pytest.raises(AmbiguousRunId) as ambiguous:
        store.resolve("251128-101010-ab")
    assert ambiguous.value.matches == ["251128-101010-abcd", "251128-101010-abef"]
    assert "251128-101010-abcd" in str(ambiguous.value) and "251128-101010-abef" in str(ambiguous.value)
    with pytest.raises(RunNotFound) as missing:
        store.resolve("999")
    assert "\n" not in str(missing.value) and "999" in str(missing.value)
    with pytest.raises(RunNotFound):
        store.resolve("")


def _exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def test_reconcile_stale_runs(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    dead = _exited_pid()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for: a zombie
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").exists() and \
            Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    now = time.time()
    base = {"host": HOST, "status": "running", "started": now}
    store.add({**base, "id": "dead", "pid": dead})
    store.add({**base, "id": "zombie", "pid": zombie.pid})
    store.add({**base, "id": "alive", "pid": os.getpid()})
    store.add({**base, "id": "alive-no-start", "pid": os.getpid(), "started": None})
    store.add({**base, "id": "reused-pid", "pid": os.getpid(), "started": now - 86400})
    store.add({**base, "id": "queued-dead", "pid": dead, "status": "queued"})
    store.add({**base, "id": "other-host", "pid": dead, "host": HOST + "-elsewhere"})
    store.add({**base, "id": "done-event", "pid": dead})
    store.add({**base, "id": "failed-event", "pid": dead})
    store.add({**base, "id": "resumed-after-stop", "pid": dead})
    store.add({**base, "id": "finished", "pid": dead, "status": "done", "metrics": {"a": 1}})

    with EventWriter(ws.events_path("done-event")) as w:
        w.write({"type": "epoch", "phase": "student", "index": 0, "epoch": 1,
                 "metrics": {"test_agreement": 0.9}})
        w.write({"type": "done", "metrics": {"test_agreement": 0.9, "test_acc": 0.95}, "t": 1234.5})
        w.write({"type": "log", "message": "results in ..."})
    with EventWriter(ws.events_path("failed-event")) as w:
        w.write({"type": "failed", "error": "loss is NaN at epoch 3", "phase": "student",
                 "epoch": 3, "step": 7})
    with EventWriter(ws.events_path("resumed-after-stop")) as w:
        w.write({"type": "stopped", "epoch": 2})
        w.write({"type": "phase_start", "phase": "student", "index": 0, "total": 1})

    # The explicit step settles them (a read does not: tests/test_lifecycle.py).
    fresh = RunStore(ws)
    assert set(reconcile(fresh)) == {"dead", "zombie", "queued-dead", "reused-pid", "done-event", "failed-event",
                                     "resumed-after-stop"}
    by_id = {r["id"]: r for r in fresh.all(details=True)}
    assert by_id["dead"]["status"] == "interrupted" and by_id["dead"]["finished"] >= now
    assert by_id["zombie"]["status"] == "interrupted"
    assert by_id["queued-dead"]["status"] == "interrupted"
    assert by_id["alive"]["status"] == "running"
    assert by_id["alive-no-start"]["status"] == "running"
    assert by_id["reused-pid"]["status"] == "interrupted"  # that pid belongs to a newer process
    assert by_id["other-host"]["status"] == "running"
    assert by_id["done-event"]["status"] == "done"
    assert by_id["done-event"]["metrics"] == {"test_agreement": 0.9, "test_acc": 0.95}
    assert by_id["done-event"]["finished"] == 1234.5
    assert by_id["failed-event"]["status"] == "failed"
    assert by_id["failed-event"]["error"] == "loss is NaN at epoch 3"
    assert by_id["resumed-after-stop"]["status"] == "interrupted"
    assert by_id["finished"]["status"] == "done" and by_id["finished"]["metrics"] == {"a": 1}
    # ... and wrote it to the file, so other readers see the same.
    raw = {d["id"]: d for d in _raw_docs(store)}
    assert raw["dead"]["status"] == "interrupted" and raw["done-event"]["status"] == "done"
    # Nothing left to do the second time.
    assert reconcile(store, ws) == []
    zombie.wait()


def test_record_with_history(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    store.add({"id": "r1", "status": "done", "metrics": {"test_agreement": 0.8}})
    with EventWriter(ws.events_path("r1")) as w:
        w.write({"type": "epoch", "phase": "teacher", "index": 0, "epoch": 1, "metrics": {"test_acc": 0.9}})
        for epoch in range(3):
            w.write({"type": "progress", "phase": "student", "index": 0, "epoch": epoch, "step": 1, "steps": 2})
            w.write({"type": "epoch", "phase": "student", "index": 0, "epoch": epoch,
                     "metrics": {"test_agreement": 0.5 + epoch / 10, "epoch": epoch}})
        w.write({"type": "done", "metrics": {"test_agreement": 0.8}})
    record = record_with_history(store, ws, "r1")
    assert record["metrics"] == {"test_agreement": 0.8}
    assert record["history"] == [
        {"epoch": 0, "test_agreement": 0.5},
        {"epoch": 1, "test_agreement": 0.6},
        {"epoch": 2, "test_agreement": 0.7},
    ]
    assert "history" not in _raw_docs(store)[0]
    store.add({"id": "r2"})
    assert record_with_history(store, None, "r2")["history"] == []  # no events file yet
    with pytest.raises(RunNotFound):
        record_with_history(store, ws, "nope")


def test_workspace_resolution_and_run_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KDTUI_HOME", raising=False)
    assert resolve_workspace(None) == tmp_path / "runs" and (tmp_path / "runs").is_dir()
    monkeypatch.setenv("KDTUI_HOME", str(tmp_path / "home"))
    assert resolve_workspace(None) == tmp_path / "home"
    assert resolve_workspace("rel/ws") == tmp_path / "rel" / "ws"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_workspace("~/tilde") == tmp_path / "tilde"

    ws = Workspace("w")
    assert ws.registry_path == tmp_path / "w" / "kdtui.json"
    assert ws.teachers_dir == tmp_path / "w" / "teachers"
    # Far more ids in one second than 4 random hex digits keep apart without the claim's retry.
    claimed = [ws.claim_run_dir() for _ in range(2000)]
    ids = [run_id for run_id, _ in claimed]
    assert len(set(ids)) == len(ids)
    assert all(path == ws.run_dir(run_id) and path.is_dir() for run_id, path in claimed)
    for run_id in ids:
        date, clock, suffix = run_id.split("-")
        assert len(date) == 6 and len(clock) == 6 and len(suffix) == 4
    with pytest.raises(FileExistsError):
        ws.create_run_dir(ids[0])
    with pytest.raises(ValueError):
        ws.run_dir("../escape")


def test_threads_share_the_lock_and_a_held_lock_times_out(tmp_path):
    import threading

    import filelock

    from kdtui.core.registry import RegistryBusy

    store = RunStore(tmp_path / "ws")
    store.add({"id": "x"})

    def work(k: int, s: RunStore) -> None:
        for i in range(10):
            s.update("x", **{f"f{k}": i})

    threads = [threading.Thread(target=work, args=(k, store if k % 2 else RunStore(store.path)))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(store.get("x")[f"f{k}"] == 9 for k in range(4))

    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another holder of the registry lock (as another process would be)
        with filelock.FileLock(str(store.lock_path), timeout=5):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(RegistryBusy):
            RunStore(store.path, lock_timeout=0.2).update("x", status="done")
        assert store.get("x")["status"] == "queued"  # reads need no lock
    finally:
        release.set()
        holder.join()


# -- run folders are the truth ---------------------------------------------------------------------

def _folder_record(ws: Workspace, run_id: str) -> dict:
    return json.loads((ws.run_dir(run_id) / "record.json").read_text())


def _index_by_id(store: RunStore) -> dict[str, dict]:
    return {doc["id"]: doc for doc in _raw_docs(store)}


def _expected_row(record: dict) -> dict:
    """The index's row for a record, by the rule written out: no spec or teachers, and of the final
    metrics only those the lists show."""
    listed = ("epoch", "train_agreement", "test_agreement", "test_acc", "teacher_test_acc")
    row = {k: v for k, v in record.items() if k not in ("spec", "teachers")}
    if isinstance(row.get("metrics"), dict):
        row["metrics"] = {k: v for k, v in row["metrics"].items() if k in listed}
    return row


def test_record_json_mirrors_every_change(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    a, b, c = "251128-101010-000a", "251128-101010-000b", "251128-101010-000c"

    def mirrored() -> None:
        """Each folder's record.json is the whole record; the index holds it less the details."""
        for run_id, row in _index_by_id(store).items():
            whole = _folder_record(ws, run_id)
            assert _expected_row(whole) == row, run_id
            assert "spec" in whole and "teachers" in whole and "spec" not in row and "teachers" not in row
            assert store.get(run_id) == whole

    store.add({"id": a, "name": "first", "spec": {"seed": 1}})
    mirrored()
    store.add_many([{"id": b, "status": "running", "host": HOST, "pid": _exited_pid()}, {"id": c}])
    mirrored()
    store.update(a, status="done", metrics={"test_agreement": 0.5, "nan": float("nan"), "test_kl": 0.25})
    mirrored()
    assert _folder_record(ws, a)["metrics"] == {"test_agreement": 0.5, "nan": None, "test_kl": 0.25}
    assert _index_by_id(store)[a]["metrics"] == {"test_agreement": 0.5}  # the index keeps what lists show
    assert _folder_record(ws, a)["spec"] == {"seed": 1}  # updates keep the details the index lacks
    store.update_many([a, c], executor="x")
    mirrored()
    store.put({**store.get(c), "status": "failed", "error": "boom"})
    mirrored()
    assert _folder_record(ws, c)["error"] == "boom"
    assert reconcile(RunStore(ws)) == [b]  # the dead pid's run is settled in its folder too
    mirrored()
    assert _folder_record(ws, b)["status"] == "interrupted"
    store.remove(a)  # the index only: the folder is deleted after it (RunService.remove), so a failed
    assert a not in _index_by_id(store) and (ws.run_dir(a) / "record.json").exists()  # write strands nothing
    mirrored()


def _varied_records() -> list[dict]:
    return [{"id": f"251201-0000{k:02d}-{k:04x}", "name": f"run ‮{k} ünï", "status": ["done", "failed", "queued"][k % 3],
             "spec": {"seed": k, "student": {"epochs": 3, "lr": 0.1 * k}, "data": {"extra": [1, "two", None]}},
             "spec_hash": f"{k:064x}", "group_hash": f"{k // 2:064x}", "metrics": {"test_agreement": k / 7, "test_kl": k / 3, "epoch": k},
             "teachers": [{"key": "k" * 16, "member": 0, "reused": bool(k % 2)}], "device": "cpu",
             "host": "elsewhere", "pid": 100 + k, "created": 1.7e9 + k, "started": None, "finished": 1.7e9 + k + 1,
             "error": None if k % 3 != 1 else "loss is NaN", "slot": f"cpu-{k}", "gpu": None}
            for k in range(12)]


def test_reindex_round_trips_every_field_of_every_record(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    store.add_many(_varied_records()[:6])
    for record in _varied_records()[6:]:
        store.add(record)
    store.update("251201-000003-0003", status="stopped", finished=5.0)
    before = _index_by_id(store)
    assert len(before) == 12

    ws.registry_path.unlink()
    import shutil
    shutil.rmtree(store.index_dir)
    ws.create_run_dir("251202-000000-dead")  # a claimed folder that never got its record
    (ws.run_dir("251202-000000-dead") / "spec.toml").write_text("name = 'x'\n")
    ws.create_run_dir("251202-000000-beef")
    (ws.run_dir("251202-000000-beef") / "record.json").write_text("{not json")
    (ws.root / "teachers").mkdir()  # not a run folder

    result = RunStore(ws).reindex()
    assert result.records == 12
    assert result.without_record == ["251202-000000-dead"]
    assert result.unreadable == [("251202-000000-beef", "not valid JSON")]
    text = result.describe()
    assert "\n" not in text and "12 run folders" in text
    assert "251202-000000-dead" in text and "251202-000000-beef" in text
    assert _index_by_id(store) == before  # every field of every record, exactly
    assert {r["id"]: r for r in RunStore(ws).all()} == before
    assert RunStore(ws).unregistered_run_folders() == ["251202-000000-beef", "251202-000000-dead"]


@pytest.mark.parametrize("damage", ["deleted", "emptied", "garbage", "shard garbage"])
def test_a_lost_registry_with_run_folders_needs_a_reindex_and_writes_do_not_clobber(tmp_path, damage):
    from kdtui.core.registry import RegistryNeedsReindex

    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    ids = [f"251128-10101{k}-000{k}" for k in range(3)]
    for run_id in ids:
        store.add({"id": run_id, "status": "done"})
    if damage == "deleted":
        ws.registry_path.unlink()
    elif damage == "emptied":
        ws.registry_path.write_text("")
    elif damage == "garbage":
        ws.registry_path.write_text("\x00{garbage")
    else:
        for k in range(64):  # every shard, so that every write meets a damaged one
            (store.index_dir / f"{k:02x}.json").write_text("[1, 2")
    before = ws.registry_path.read_bytes() if ws.registry_path.exists() else None

    for read in (lambda s: s.all(), lambda s: s.get(ids[0]), len, lambda s: s.find(status="done")):
        with pytest.raises(RegistryNeedsReindex) as raised:
            read(RunStore(ws))
        message = str(raised.value)
        assert "\n" not in message and "kdtui runs reindex" in message
    if damage != "shard garbage":
        assert f"registry {ws.registry_path}" in message and "3 run folders exist" in message
    for write in (lambda s: s.add({"id": "251128-999999-0001"}), lambda s: s.update(ids[0], status="failed"),
                  lambda s: s.add_many([{"id": "251128-999999-0002"}]), lambda s: s.remove(ids[1])):
        with pytest.raises(RegistryNeedsReindex):
            write(RunStore(ws))
    after = ws.registry_path.read_bytes() if ws.registry_path.exists() else None
    assert after == before  # no fresh, empty registry over the lost one
    assert [_folder_record(ws, run_id)["status"] for run_id in ids] == ["done"] * 3

    assert RunStore(ws).reindex().records == 3
    assert sorted(r["id"] for r in RunStore(ws).all()) == ids


def test_an_empty_workspace_is_not_an_error_and_garbage_alone_is_corrupt(tmp_path):
    from kdtui.core.registry import RegistryCorrupt, RegistryNeedsReindex

    ws = Workspace(tmp_path / "ws")
    assert RunStore(ws).all() == [] and len(RunStore(ws)) == 0
    ws.registry_path.write_text("")
    assert RunStore(ws).all() == []
    ws.registry_path.write_text("{oops")
    with pytest.raises(RegistryCorrupt) as raised:
        RunStore(ws).all()
    assert not isinstance(raised.value, RegistryNeedsReindex)
    assert str(raised.value) == f"registry {ws.registry_path} is not valid JSON"
    ws.registry_path.unlink()
    RunStore(ws).add({"id": "251128-101010-0001"})  # the first run of a new workspace
    assert [r["id"] for r in RunStore(ws).all()] == ["251128-101010-0001"]


def test_run_folders_not_in_the_registry_are_listed(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    store.add({"id": "251128-101010-0001"})
    for run_id in ("251128-101010-0002", "251128-101010-0003"):
        ws.create_run_dir(run_id)
    (ws.root / "teachers").mkdir()
    (ws.root / "251128-101010-0004").write_text("a file, not a folder")
    assert store.unregistered_run_folders() == ["251128-101010-0002", "251128-101010-0003"]
    assert store.unregistered_run_folders(store.all()) == ["251128-101010-0002", "251128-101010-0003"]
    assert store.run_folders() == ["251128-101010-0001", "251128-101010-0002", "251128-101010-0003"]


def test_put_writes_back_a_record_that_vanished_mid_run(tmp_path):
    from kdtui.core.registry import RegistryNeedsReindex

    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    run_id = "251128-101010-0001"
    record = store.add({"id": run_id, "status": "running", "spec": {"seed": 3}})
    ws.registry_path.unlink()  # deleted while the run was going; it is the only run folder
    final = store.put({**record, "status": "done", "metrics": {"test_agreement": 0.9}})
    assert store.get(run_id) == final and final["status"] == "done"
    assert _folder_record(ws, run_id) == final

    other = "251128-101010-0002"
    store.add({"id": other})
    ws.registry_path.unlink()  # now another run's folder exists too: only a reindex may rebuild
    with pytest.raises(RegistryNeedsReindex):
        store.put({**final, "status": "failed"})
    assert _folder_record(ws, run_id)["status"] == "failed"  # the folder still got the record
    assert not ws.registry_path.exists()
    RunStore(ws).reindex()
    assert RunStore(ws).get(run_id)["status"] == "failed" and RunStore(ws).get(other) is not None


def test_a_layout1_registry_is_carried_over_by_reindex(tmp_path):
    from kdtui.core.registry import RegistryNeedsReindex

    ws = Workspace(tmp_path / "ws")
    records = [{**r, "schema_version": 2} for r in _varied_records()[:4]]
    for r in records:
        ws.create_run_dir(r["id"])
    ws.registry_path.write_text(json.dumps({"_default": {str(i + 1): r for i, r in enumerate(records)}}))
    with pytest.raises(RegistryNeedsReindex) as raised:
        RunStore(ws).all()
    assert "older layout" in str(raised.value)
    result = RunStore(ws).reindex()
    assert result.records == 4 and len(result.migrated) == 4 and "old registry" in result.describe()
    store = RunStore(ws)
    assert {r["id"]: r for r in store.all(details=True)} == {r["id"]: r for r in records}
    assert all(_folder_record(ws, r["id"]) == r for r in records)


def test_the_index_lists_rows_and_single_run_reads_join_the_details_from_the_folder(tmp_path):
    """Lists parse rows (a record less its spec and teachers, with the listed metrics only); every
    read of one run, and a list asked for details, gives the whole record, as record.json holds it."""
    ws = Workspace(tmp_path / "ws")
    store = RunStore(ws)
    records = [{**r, "schema_version": 2} for r in _varied_records()[:5]]
    store.add_many(records)
    by_id = {r["id"]: r for r in records}
    for row in store.all():
        assert row == _expected_row(by_id[row["id"]])
    assert _raw_docs(store) and all("spec" not in doc for doc in _raw_docs(store))
    assert store.all(details=True) == sorted(records, key=lambda r: r["created"])
    assert store.with_details(store.find(status="done")) == store.find(status="done", details=True) == [
        by_id[i] for i in sorted(by_id) if by_id[i]["status"] == "done"]
    one = records[3]["id"]
    assert store.get(one) == by_id[one] == store.resolve(one[-4:])
    assert list(store.get(one)) == list(by_id[one])  # the contract's key order, details in place
    # A row written whole by an earlier kdtui still reads right: details come from the folder.
    shard = ws.root / "kdtui.index" / f"{shard_of(one)}.json"
    tables = json.loads(shard.read_text())
    (doc_id,) = [k for k, row in tables["runs"].items() if row["id"] == one]
    tables["runs"][doc_id] = {**by_id[one], "spec": {"stale": True}}
    shard.write_text(json.dumps(tables))
    assert RunStore(ws).get(one)["spec"] == by_id[one]["spec"]
    # A folder whose record.json is gone: the row, with empty details.
    (ws.run_dir(one) / "record.json").unlink()
    assert RunStore(ws).get(one)["spec"] == {}
