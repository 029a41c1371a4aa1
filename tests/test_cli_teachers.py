"""`kdtui teachers list/prune`: sizes that count the caches, last use, the runs that used a teacher,
and a prune that never removes a teacher a queued or running run needs."""
import json
import os
import time

from cli_helpers import fake_run, json_out, kdtui, tiny_spec

from kdtui.core.spec import parse_spec, teacher_key
from kdtui.core.teachers import INDEPENDENT_SEED_OFFSET, USED_NAME

DAY = 86400


def stored_teacher(ws, key, *, size, days_ago, meta=True):
    folder = ws / "teachers" / key
    folder.mkdir(parents=True)
    (folder / "teacher.pt").write_bytes(b"\0" * size)
    (folder / "views-0123456789abcdef.pt").write_bytes(b"\0" * (3 * size))  # its output cache
    if meta:
        (folder / "meta.json").write_text(json.dumps({
            "key": key, "member": 0, "seed": 7, "teacher": {"model": "lenet5", "epochs": 3},
            "data": {"dataset": "digits"}}))
    used = time.time() - days_ago * DAY
    (folder / USED_NAME).touch()
    os.utime(folder / USED_NAME, (used, used))
    return folder


def disk_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def spec_data(seed=0, **sections):
    return parse_spec(tiny_spec(seed=seed, **sections)).model_dump(mode="json")


def test_list_shows_size_with_caches_last_use_and_runs(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000000-aaaa", teachers=[{"key": "k" * 64, "member": 0}])
    fake_run(ws, "261128-000000-bbbb", teachers=[{"key": "k" * 64, "member": 0}])
    stored_teacher(ws, "k" * 64, size=1000, days_ago=2)
    stored_teacher(ws, "j" * 64, size=10, days_ago=40, meta=False)
    out = json_out(kdtui("teachers", "list", "--json", "-w", ws))
    rows = {row["key"]: row for row in out["teachers"]}
    sizes = {key: disk_bytes(ws / "teachers" / key) for key in ("k" * 64, "j" * 64)}
    assert sizes["k" * 64] > 4000 and sizes["j" * 64] == 40  # checkpoint + cache (+ meta.json)
    assert rows["k" * 64]["bytes"] == sizes["k" * 64] and rows["j" * 64]["bytes"] == sizes["j" * 64]
    assert out["total_bytes"] == sum(sizes.values())
    assert sorted(rows["k" * 64]["runs"]) == ["261128-000000-aaaa", "261128-000000-bbbb"]
    assert rows["j" * 64]["runs"] == []
    assert abs(rows["k" * 64]["last_used"] - (time.time() - 2 * DAY)) < 60
    assert "lenet5 3 ep, digits, seed 7" in rows["k" * 64]["spec"]
    text = kdtui("teachers", "list", "-w", ws)
    assert text.returncode == 0
    assert "kkkkkkkkkkkk" in text.stdout and "2 teacher(s)" in text.stdout and "no meta.json" in text.stdout


def test_prune_never_removes_a_teacher_a_queued_or_running_run_needs(tmp_path):
    ws = tmp_path / "ws"
    queued = spec_data(seed=3)
    control = spec_data(seed=4)
    control["eval"] = {**control.get("eval", {}), "independent": True}
    queued_key = teacher_key(parse_spec(tiny_spec(seed=3)), 0)  # not obtained yet: known from the spec
    control_spec = parse_spec(tiny_spec(seed=4 + INDEPENDENT_SEED_OFFSET))
    control_key = teacher_key(control_spec, 0)  # the independent control's own teacher
    fake_run(ws, "261128-000000-aaaa", status="queued", spec=queued)
    fake_run(ws, "261128-000000-bbbb", status="running", pid=os.getpid(), started=time.time(),
             spec=control, teachers=[{"key": "r" * 64, "member": 0}])
    fake_run(ws, "261128-000000-cccc", status="done", spec=spec_data(seed=9),
             teachers=[{"key": "d" * 64, "member": 0}])
    for key in (queued_key, control_key, "r" * 64, "d" * 64, "o" * 64):
        stored_teacher(ws, key, size=100, days_ago=90)

    freed = disk_bytes(ws / "teachers" / ("d" * 64)) + disk_bytes(ws / "teachers" / ("o" * 64))
    dry = json_out(kdtui("teachers", "prune", "--older-than", "30d", "--dry-run", "--json", "-w", ws))
    assert sorted(dry["removed"]) == ["d" * 64, "o" * 64]
    assert (ws / "teachers" / ("d" * 64)).exists()  # a dry run removes nothing

    done = json_out(kdtui("teachers", "prune", "--max-size", "0", "--json", "-w", ws))
    assert sorted(done["removed"]) == ["d" * 64, "o" * 64] and done["freed_bytes"] == freed
    left = sorted(p.name for p in (ws / "teachers").iterdir())
    assert left == sorted([queued_key, control_key, "r" * 64])


def test_prune_keeps_recent_teachers_and_fits_the_size_by_least_recent_use(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000000-aaaa")
    for key, days in (("a" * 64, 1), ("b" * 64, 5), ("c" * 64, 50)):
        stored_teacher(ws, key, size=250, days_ago=days)  # 1000 bytes each with the cache
    assert json_out(kdtui("teachers", "prune", "--older-than", "30d", "--json", "-w", ws))["removed"] == ["c" * 64]
    assert json_out(kdtui("teachers", "prune", "--max-size", "1.5K", "--json", "-w", ws))["removed"] == ["b" * 64]
    assert [p.name for p in (ws / "teachers").iterdir()] == ["a" * 64]


def test_prune_refuses_bad_arguments_and_unreadable_active_specs_in_one_line(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261128-000000-aaaa")
    stored_teacher(ws, "o" * 64, size=10, days_ago=90)
    for args, needle in ((["--older-than", "soon"], "--older-than"), (["--max-size", "big"], "--max-size"),
                         ([], "--older-than AGE, --max-size SIZE")):
        result = kdtui("teachers", "prune", *args, "-w", ws)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    fake_run(ws, "261128-000000-bbbb", status="queued", spec={"teacher": {"epochs": "many"}})
    result = kdtui("teachers", "prune", "--older-than", "1d", "-w", ws)
    assert result.returncode == 2 and "261128-000000-bbbb" in result.stderr and "nothing removed" in result.stderr
    assert (ws / "teachers" / ("o" * 64)).exists()


def test_the_help_screen_shows_the_store_size_with_its_caches(tmp_path):
    from types import SimpleNamespace

    from kdtui.core.teachers import human_size
    from kdtui.core.workspace import Workspace
    from kdtui.tui.screens.help import store_size

    ws = tmp_path / "ws"
    fake_run(ws, "261128-000000-aaaa")
    folders = [stored_teacher(ws, key, size=300_000, days_ago=1) for key in ("a" * 64, "b" * 64)]
    app = SimpleNamespace(workspace=Workspace(ws))
    assert store_size(app) == human_size(sum(disk_bytes(f) for f in folders))
    assert store_size(app).endswith("MiB")  # 2 x (300 kB + 900 kB cache)
