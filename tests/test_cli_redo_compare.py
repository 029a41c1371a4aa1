"""Issue 18 in the CLI: `kdtui run --from ID --set KEY=VALUE`, the diff-only defaults of
`runs compare` and `runs export`, `report --group` by a run id, and `runs show`'s metric order.

Real `kdtui` processes on real registries: fake finished runs where only the record matters, one
real tiny run for a redo that is accepted.
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess

import pytest
from cli_helpers import KDTUI, cli_env, fake_run, json_out, kdtui, tiny_spec

from kdtui.core.spec import parse_spec


@pytest.fixture
def ws(tmp_path):
    """Two seeds at τ=4 and one at τ=1 of a real tiny digits spec (resolved, as records hold it)."""
    ws = tmp_path / "ws"
    base = parse_spec(tiny_spec("digits-temp", teacher_epochs=1, student_epochs=1)).resolved().model_dump(mode="json")
    points = [("261203-110000-bb01", 4.0, 0, "4"), ("261203-110001-bb02", 4.0, 1, "4"),
              ("261203-110002-bb03", 1.0, 0, "1")]
    for run_id, temperature, seed, group in points:
        spec = json.loads(json.dumps(base))
        spec["seed"], spec["distill"]["temperature"] = seed, temperature
        spec["name"] = f"digits-temp[distill.temperature={temperature:g},seed={seed}]"
        fake_run(ws, run_id, name=spec["name"], spec=spec, group_hash=group * 64, created=1796283619.2083,
                 metrics={"test_agreement": 0.5 + seed / 10, "test_acc": 0.7, "train_agreement": 0.9,
                          "test_kl": 0.2, "test_examples": 360, "teacher_test_acc": 0.8, "train_loss": 12.3456})
    return ws


def _ids(ws) -> list[str]:
    return sorted(p.name for p in ws.iterdir() if p.is_dir() and p.name[:2] == "26")


def _registered(ws) -> int:
    return len(json_out(kdtui("runs", "list", "--workspace", ws, "--json")))


@pytest.mark.parametrize("item, named", [
    ("distill.temprature=8", "distill.temprature"),
    ("distill.temperature=-1", "distill.temperature"),
    ("distill.temperature=hot", "distill.temperature"),
    ("seed=1.5", "seed"),
    ("student.epochs=0", "student.epochs"),
    ("distill.loss=nope", "distill.loss"),
    ("nosection.x=1", "nosection"),
    ("distill.temperature.x=1", "distill.temperature"),
    ("temperature", "temperature"),
    ("sweep.seed=[1,2]", "sweep"),
])
def test_run_from_with_a_bad_set_is_one_line_and_registers_nothing(ws, item, named):
    folders = _ids(ws)
    result = kdtui("run", "--from", "bb01", "--set", item, "--workspace", ws)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and named in result.stderr and "Traceback" not in result.stderr
    assert _ids(ws) == folders and _registered(ws) == 3


def test_run_from_an_unknown_run_or_set_without_from_is_one_line(ws):
    for args in (("--from", "zzzz"), ("--set", "seed=1", "--preset", "e1")):
        result = kdtui("run", *args, "--workspace", ws)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert _registered(ws) == 3


def test_run_from_with_sets_runs_the_changed_spec(ws):
    result = kdtui("run", "--from", "bb03", "--set", "distill.temperature=8", "--set", "distill.loss=reverse-kl",
                   "--set", "seed=2", "--workspace", ws, "--json")
    assert result.returncode == 0, result.stderr
    new = json_out(result)
    old = json_out(kdtui("runs", "show", "bb03", "--workspace", ws, "--json"))
    assert new["id"] != old["id"] and new["status"] == "done"
    assert new["spec"]["distill"]["temperature"] == 8.0 and new["spec"]["distill"]["loss"] == "reverse-kl"
    assert new["spec"]["seed"] == 2
    # everything else is the source run's resolved spec
    changed = {("distill", "temperature"), ("distill", "loss"), ("seed",), ("name",)}
    for section, value in old["spec"].items():
        if isinstance(value, dict):
            for key, inner in value.items():
                if (section, key) not in changed:
                    assert new["spec"][section][key] == inner, (section, key)
        elif (section,) not in changed:
            assert new["spec"][section] == value, section
    assert new["name"] == "digits-temp[distill.temperature=8,seed=2,distill.loss=reverse-kl]"
    assert new["group_hash"] != old["group_hash"] and new.get("preset") is None


def test_compare_is_diff_only_unless_all_keys(ws):
    text = kdtui("runs", "compare", "bb01", "bb03", "--workspace", ws).stdout
    assert "distill.temperature" in text and "student.lr" not in text and "data.dataset" not in text
    every = kdtui("runs", "compare", "bb01", "bb03", "--all-keys", "--workspace", ws).stdout
    assert "distill.temperature" in every and "student.lr" in every and "data.dataset" in every
    # the old flag is still accepted and is the default
    assert kdtui("runs", "compare", "bb01", "bb03", "--diff-only", "--workspace", ws).stdout == text


def test_compare_and_export_show_tags_and_notes(ws):
    kdtui("runs", "tag", "bb01", "+baseline", "--workspace", ws)
    kdtui("runs", "note", "bb03", "cold", "--workspace", ws)
    text = kdtui("runs", "compare", "bb01", "bb03", "--workspace", ws).stdout
    assert re.search(r"tags\s.*baseline", text) and re.search(r"note\s.*cold", text)
    rows = list(csv.DictReader(io.StringIO(kdtui("runs", "export", "bb01", "bb03", "--workspace", ws).stdout)))
    assert [(r["tags"], r["note"]) for r in rows] == [("baseline", ""), ("", "cold")]


def test_export_defaults_to_what_a_person_reads(ws):
    rows = list(csv.DictReader(io.StringIO(kdtui("runs", "export", "--workspace", ws).stdout)))
    assert [r["id"] for r in rows] == ["bb01", "bb02", "bb03"]
    assert [r["label"] for r in rows] == ["seed=0, τ=4", "seed=1, τ=4", "seed=0, τ=1"]
    assert rows[0]["group"] == "4" * 8 and "group_hash" not in rows[0] and "spec_hash" not in rows[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", rows[0]["created"])
    config = [k for k in rows[0] if "." in k or k == "seed"]
    assert config == ["seed", "distill.temperature"]  # only what differs
    md = kdtui("runs", "export", "--format", "md", "--workspace", ws).stdout
    assert md.splitlines()[0].startswith("| id | label | name | status | tags | note | group | created | seed |")
    assert "1796283619" not in md and "4" * 64 not in md and "| bb01 |" in md
    every = list(csv.DictReader(io.StringIO(kdtui("runs", "export", "--all-keys", "--workspace", ws).stdout)))
    assert every[0]["id"] == "261203-110000-bb01" and every[0]["group_hash"] == "4" * 64
    assert every[0]["created"] == "1796283619.2083" and "student.lr" in every[0] and "data.dataset" in every[0]


def test_report_group_takes_a_run_id_and_names_the_group(ws):
    by_run = kdtui("report", "--group", "bb02", "--workspace", ws)
    assert by_run.returncode == 0, by_run.stderr
    index = ws / "reports" / ("group-" + "4" * 8) / "index.md"
    text = index.read_text()
    assert text.startswith("# digits-temp[distill.temperature=4] (group 44444444)")
    assert "2 runs in 1 setting " in text and "seed group" in text and "1 settings" not in text
    assert kdtui("report", "--group", "4444", "--workspace", ws).returncode == 0  # a hash prefix still works
    bad = kdtui("report", "--group", "zzzz9", "--workspace", ws)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_runs_show_lists_metrics_in_the_vocabulary_order_with_its_labels(ws):
    text = subprocess.run([*KDTUI, "runs", "show", "bb01", "--workspace", str(ws)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**cli_env(), "COLUMNS": "80"}, timeout=120).stdout
    summary = [line.split("│")[1].strip() for line in text.split("id: ")[0].splitlines() if line.count("│") == 3]
    assert summary == ["train agr", "test agr", "test KL", "test acc", "teacher acc", "test examples", "loss"]
    assert "test_examples" not in text
    history_header = next(line for line in text.splitlines() if line.strip().startswith("epoch "))
    assert history_header.split() == ["epoch", "train", "agr", "test", "agr", "test", "KL", "test", "acc"]
