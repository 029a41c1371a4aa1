"""Issue 18 in the CLI: notes, tags and rename on runs (`kdtui runs note/tag/rename`), and
`kdtui runs list --where` with the filter's terms (spec values, status:, tag:, words).

Real `kdtui` processes on real registries of fake finished runs (only the record matters here).
"""
from __future__ import annotations

import json

import pytest
from cli_helpers import fake_run, json_out, kdtui, record


@pytest.fixture
def ws(tmp_path):
    """A τ × seed sweep of four finished runs and one running reverse-KL run."""
    ws = tmp_path / "ws"
    points = [("261203-100000-aa01", 4.0, 0, "kl"), ("261203-100001-aa02", 4.0, 1, "kl"),
              ("261203-100002-aa03", 1.0, 0, "kl"), ("261203-100003-aa04", 1.0, 1, "kl")]
    for run_id, temperature, seed, loss in points:
        fake_run(ws, run_id, name=f"digits-temp[distill.temperature={temperature:g},seed={seed}]",
                 spec={"seed": seed, "distill": {"temperature": temperature, "loss": loss},
                       "teacher": {"lr": 0.1}, "student": {"lr": 0.05}})
    fake_run(ws, "261203-100004-aa05", status="done", name="rkl",
             spec={"seed": 1, "distill": {"temperature": 4.0, "loss": "reverse-kl"}})
    return ws


def listed(ws, where: str) -> set[str]:
    result = kdtui("runs", "list", "--workspace", ws, "--json", "--where", where)
    assert result.returncode == 0, result.stderr
    return {r["id"][-4:] for r in json.loads(result.stdout)}


def test_note_is_stored_in_record_json_and_the_index_and_shown(ws):
    result = kdtui("runs", "note", "aa01", "too hot; rerun with τ=2", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    on_disk = json.loads((ws / "261203-100000-aa01" / "record.json").read_text())
    assert on_disk["note"] == "too hot; rerun with τ=2"
    assert record(ws, "261203-100000-aa01")["note"] == "too hot; rerun with τ=2"
    assert "note: too hot; rerun with τ=2" in kdtui("runs", "show", "aa01", "--workspace", ws).stdout
    # the note's words are searched by the filter
    assert listed(ws, "rerun") == {"aa01"}
    assert kdtui("runs", "note", "aa01", "", "--workspace", ws).returncode == 0  # clears it
    assert json_out(kdtui("runs", "show", "aa01", "--workspace", ws, "--json")).get("note") is None
    assert listed(ws, "rerun") == set()


def test_tags_add_and_remove_and_filter(ws):
    assert kdtui("runs", "tag", "aa01", "+baseline", "old", "--workspace", ws).returncode == 0
    assert kdtui("runs", "tag", "aa03", "baseline", "--workspace", ws).returncode == 0
    result = kdtui("runs", "tag", "aa01", "-old", "+paper", "+baseline", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert "tags: baseline paper" in result.stdout
    on_disk = json.loads((ws / "261203-100000-aa01" / "record.json").read_text())
    assert on_disk["tags"] == ["baseline", "paper"]
    assert listed(ws, "tag:baseline") == {"aa01", "aa03"}
    assert listed(ws, "tag:baseline tag:paper") == {"aa01"}
    assert listed(ws, "tag:baseline τ=1") == {"aa03"}
    assert "tags: baseline paper" in kdtui("runs", "show", "aa01", "--workspace", ws).stdout


@pytest.mark.parametrize("change", ["+", "two words", "a,b", "+bad\x1b[31m"])
def test_a_bad_tag_is_one_line_and_changes_nothing(ws, change):
    result = kdtui("runs", "tag", "aa02", change, "--workspace", ws)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "tag" in result.stderr
    assert "Traceback" not in result.stderr and "tags" not in record(ws, "261203-100001-aa02")


def test_rename_keeps_id_spec_hashes_and_group(ws):
    before = json_out(kdtui("runs", "show", "aa02", "--workspace", ws, "--json"))
    result = kdtui("runs", "rename", "aa02", "warm-seed-1", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    after = json_out(kdtui("runs", "show", "aa02", "--workspace", ws, "--json"))
    assert after["name"] == "warm-seed-1" and before["name"] != after["name"]
    for key in ("id", "spec", "spec_hash", "group_hash", "metrics", "status"):
        assert after[key] == before[key], key
    assert json.loads((ws / "261203-100001-aa02" / "record.json").read_text())["name"] == "warm-seed-1"
    assert listed(ws, "warm") == {"aa02"}


@pytest.mark.parametrize("name", ["", "   ", "evil\x1b]0;x\x07"])
def test_a_bad_name_is_one_line_and_changes_nothing(ws, name):
    result = kdtui("runs", "rename", "aa02", name, "--workspace", ws)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "name" in result.stderr
    assert record(ws, "261203-100001-aa02")["name"] == "digits-temp[distill.temperature=4,seed=1]"


@pytest.mark.parametrize("where, expected", [
    ("τ=4", {"aa01", "aa02", "aa05"}),
    ("temperature=4 seed=1", {"aa02", "aa05"}),
    ("distill.temperature=1.0", {"aa03", "aa04"}),
    ("loss=reverse-kl", {"aa05"}),
    ("student.lr=0.05 seed=0", {"aa01", "aa03"}),
    ("status:done digits-temp τ=1 seed=0", {"aa03"}),
    ("status:running", set()),
    ("aa04", {"aa04"}),
])
def test_runs_list_where(ws, where, expected):
    assert listed(ws, where) == expected


def test_runs_list_where_table_and_a_bad_term(ws):
    table = kdtui("runs", "list", "--workspace", ws, "--where", "τ=1 seed=1").stdout
    assert "aa04" in table and "aa03" not in table and "aa01" not in table
    bad = kdtui("runs", "list", "--workspace", ws, "--where", "τ=")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--where" in bad.stderr
    misspelt = kdtui("runs", "list", "--workspace", ws, "--where", "temprature=4")
    assert misspelt.returncode == 2 and misspelt.stderr.count("\n") == 1
    assert "'temprature'" in misspelt.stderr and "'temperature'" in misspelt.stderr
