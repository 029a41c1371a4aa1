"""A group's n counts the runs that have the value, in the header and in the cell alike.

A group of two seeds where one run stopped before any metric: its mean is over one seed, so its
header says n=1 (and that one run has no metrics), not n=2; a metric only some runs have says its
own n in its cell.
"""
from __future__ import annotations

import re

from cli_helpers import fake_run, json_out, kdtui
from kdtui.analysis import compare as cmp
from kdtui.analysis.compare import MeanStd
from kdtui.analysis.report import build_report
from kdtui.core.vocabulary import metric_label


def _record(run_id: str, seed: int, metrics: dict, status: str = "done") -> dict:
    return {"id": run_id, "name": f"kd[seed={seed}]", "status": status, "group_hash": "g" * 64,
            "spec": {"name": "kd", "seed": seed, "distill": {"temperature": 4.0}}, "metrics": metrics,
            "history": [], "teachers": []}


DONE = {"test_agreement": 0.8, "train_agreement": 0.9, "test_acc": 0.7, "test_kl": 0.2}


def test_a_run_without_metrics_is_not_counted_in_the_header():
    records = [_record("260101-000000-aaaa", 0, DONE), _record("260101-000000-bbbb", 1, {}, status="stopped")]
    comparison = cmp.compare(records, by_group=True)
    cell = comparison.metric("test_agreement")[0]
    assert isinstance(cell, MeanStd) and cell.n == 1 and cell.mean == 0.8
    assert comparison.unders == ["n=1 seed, 1 run without metrics"]
    assert "n=1 seed" in comparison.columns[0] and "n=2" not in comparison.columns[0]
    assert comparison.counts == [1]
    # The cell agrees with its header: no n of its own.
    assert cmp.format_cell(cell, 4, of=comparison.count(0)) == "0.8000"


def test_a_metric_some_runs_lack_says_its_own_n():
    only_first = {**DONE, "teacher_train_acc": 0.95}
    records = [_record("260101-000000-aaaa", 0, only_first), _record("260101-000000-bbbb", 1, DONE)]
    comparison = cmp.compare(records, by_group=True)
    assert comparison.unders == ["n=2 seeds"]
    lacking = comparison.metric("teacher_train_acc")[0]
    both = comparison.metric("test_agreement")[0]
    assert (lacking.n, both.n) == (1, 2)
    markdown = cmp.to_markdown(comparison)
    assert "0.9500 (n=1)" in markdown and "0.8000 ± 0.0000 |" in markdown
    assert "0.95 (n=1)" in cmp.to_csv(comparison)
    back = cmp.from_json(cmp.to_json(comparison))
    assert back.counts == [2]


def test_runs_compare_by_group_counts_only_runs_with_metrics(tmp_path):
    ws = tmp_path / "ws"
    done = fake_run(ws, "260101-000000-aaaa", spec={"name": "kd", "seed": 0})
    stopped = fake_run(ws, "260101-000000-bbbb", status="stopped", spec={"name": "kd", "seed": 1})
    (ws / stopped["id"] / "events.jsonl").write_text("")  # stopped before its first epoch
    result = kdtui("runs", "compare", done["id"], stopped["id"], "--by-group", "-w", ws)
    assert result.returncode == 0, result.stderr
    assert "n=1 seed" in result.stdout and "n=2 seeds" not in result.stdout
    assert "1 run without metrics" in re.sub(r"\s+", " ", result.stdout)
    as_json = json_out(kdtui("runs", "compare", done["id"], stopped["id"], "--by-group", "--json", "-w", ws))
    agreement = next(row for row in as_json["metrics"] if row["key"] == "test_agreement")["values"][0]
    assert agreement["n"] == 1 and as_json["counts"] == [1]


def test_report_n_counts_runs_with_metrics_and_cells_say_their_own(tmp_path):
    records = [_record("260101-000000-aaaa", 0, {**DONE, "independent_test_agreement": 0.5}),
               _record("260101-000000-bbbb", 1, DONE),
               _record("260101-000000-cccc", 2, {}, status="done")]
    index = build_report(records, tmp_path / "report", "counts")
    results = (index.parent / "results.md").read_text()
    table = [line for line in results.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = [c.strip() for c in table[2].strip("|").split("|")]
    assert row[header.index("n")] == "2"  # seed 2 has no metrics: in no mean
    assert row[header.index(metric_label("test_agreement"))] == "0.8000 ± 0.0000"
    assert row[header.index(metric_label("independent_test_agreement"))] == "0.5000 (n=1)"
