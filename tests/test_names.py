"""Run names are shown in terminals: control characters and bidirectional overrides are refused in
new specs and escaped wherever an older name is shown; CSV cells cannot start a spreadsheet formula."""
from __future__ import annotations

import csv
import io

import pytest

from cli_helpers import kdtui, run_folders, tiny_spec, write
from kdtui.analysis.compare import compare, export_runs, to_csv
from kdtui.core.names import printable, unsafe_characters
from kdtui.core.spec import SpecError, spec_from_dict

UNSAFE = {
    "\x1b[2J": "\\x1b[2J",      # C0: ESC, the start of every terminal control sequence
    "\x07": "\\x07",            # C0: bell
    "\x7f": "\\x7f",            # DEL
    "\x85": "\\x85",            # C1: next line
    "\x9b": "\\x9b",            # C1: CSI on its own
    "\u202e": "\\u202e",        # right-to-left override
    "\u202a": "\\u202a",        # left-to-right embedding
    "\u2066": "\\u2066",        # left-to-right isolate
    "\u2069": "\\u2069",        # pop directional isolate
    "\u200e": "\\u200e",        # left-to-right mark
    "\u200f": "\\u200f",        # right-to-left mark
}


@pytest.mark.parametrize("char, escaped", list(UNSAFE.items()))
def test_printable_escapes_controls_and_bidi(char, escaped):
    assert printable(f"kd{char}x") == f"kd{escaped}x"
    assert unsafe_characters(f"kd{char}x") == [char[0]]


def test_printable_leaves_ordinary_text_alone():
    for name in ("kd[seed=1,distill.temperature=4]", "étude τ=4 λ=0.5", "蒸留", "run 🚀", "a\\x1b"):
        assert printable(name) == name
    assert printable(None) == ""


@pytest.mark.parametrize("char", list(UNSAFE))
def test_spec_refuses_unsafe_names(char):
    with pytest.raises(SpecError) as caught:
        spec_from_dict({"name": f"evil{char}name"})
    message = str(caught.value)
    assert "name" in message and "control characters or bidirectional overrides" in message
    assert "\n" not in message and not unsafe_characters(message)  # the message itself is safe to print


def test_cli_refuses_an_unsafe_name_and_writes_nothing(tmp_path):
    spec = write(tmp_path / "evil.toml", tiny_spec("evil\\u202etxt.exe"))  # a TOML escape: the real character
    ws = tmp_path / "ws"
    result = kdtui("run", spec, "--workspace", ws)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "name" in lines[0], result.stderr
    assert "\u202e" not in result.stderr and "Traceback" not in result.stderr
    assert run_folders(ws) == []


def _record(run_id: str, name: str, metrics: dict) -> dict:
    return {"id": run_id, "name": name, "status": "done", "group_hash": "g", "spec_hash": "s", "created": 1.0,
            "spec": {"name": name, "seed": 0, "data": {"dataset": "digits", "root": "-rooted"}},
            "metrics": metrics, "history": []}


FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tTAB"]


def test_csv_export_defuses_formulas_but_keeps_numbers():
    records = [_record(f"r{i}", name, {"test_agreement": -0.5, "test_kl": 0.25})
               for i, name in enumerate(FORMULAS + ["kd\x1b[31m"])]
    rows = list(csv.DictReader(io.StringIO(export_runs(records, "csv"))))
    assert [row["name"] for row in rows] == ["'" + FORMULAS[0], "'+1+2", "'-2+3", "'@SUM(A1)", "\\x09TAB",
                                             "kd\\x1b[31m"]
    assert {row["test_agreement"] for row in rows} == {"-0.5"}   # a number, not text
    assert {row["data.root"] for row in rows} == {"'-rooted"}      # any text cell, not only the name


def test_comparison_csv_defuses_text_cells_but_keeps_numbers():
    records = [_record("=a", "x", {"test_agreement": -0.5}), _record("b", "y", {"test_agreement": 0.5})]
    rows = list(csv.reader(io.StringIO(to_csv(compare(records)))))
    assert rows[0][2:] == ["'=a", "b"]
    agreement = next(row for row in rows if row[1] == "test_agreement")
    assert agreement[2:] == ["-0.5", "0.5"]
