"""kdtui.analysis.compare: aggregation, diff-only, seed groups, exports. Records are built by hand and the
expected numbers worked out by hand here, not with the module."""
import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdtui.analysis import compare as cmp
from kdtui.analysis.compare import MeanStd


def _spec(seed=0, temperature=4.0, alpha=0.0, augment=("crop",), device="cpu"):
    return {
        "name": "kd", "seed": seed, "device": device,
        "data": {"dataset": "digits", "student_splits": [0]},
        "teacher": {"model": "lenet5", "epochs": 20, "augment": list(augment)},
        "student": {"model": "lenet5", "epochs": 30, "lr": 0.01},
        "distill": {"loss": "kl", "temperature": temperature, "alpha": alpha},
        "eval": {"every": 1},
    }


def _record(run_id, name="kd", seed=0, group="g" * 64, history=None, metrics=None, **spec_kw):
    return {
        "id": run_id, "name": name, "status": "done", "spec": _spec(seed=seed, **spec_kw),
        "spec_hash": f"s-{run_id}", "group_hash": group, "metrics": metrics or {},
        "history": history if history is not None else [], "teachers": [],
        "created": "2024-01-01T00:00:00",
    }


# Epoch 0 has no train_agreement/train_loss; epoch 2 was not evaluated (no test_*).
HISTORY = [
    {"epoch": 0, "train_agreement_eval": 0.10, "test_agreement": 0.11, "test_kl": 2.0, "lr": 0.1},
    {"epoch": 1, "train_agreement": 0.50, "train_loss": 1.5, "test_agreement": 0.70, "test_kl": 0.9,
     "lr": 0.09},
    {"epoch": 2, "train_agreement": 0.90, "train_loss": 0.7, "lr": 0.05},
    {"epoch": 3, "train_agreement": 0.80, "train_loss": 0.8, "test_agreement": 0.65, "test_kl": 1.1,
     "lr": 0.01},
]


def test_module_is_light():
    code = ("import sys, kdtui.analysis.compare; "
            "bad = [m for m in ('torch', 'rich', 'textual', 'kernels.engine') if m in sys.modules]; "
            "print(bad)")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env=env)
    assert out.stdout.strip() == "[]"


def test_flatten_spec():
    flat = cmp.flatten_spec({**_spec(augment=("crop", "hflip")), "sweep": {"seed": [0, 1]}})
    assert "name" not in flat and not any(k.startswith("sweep") for k in flat)
    assert flat["seed"] == 0 and flat["device"] == "cpu"
    assert flat["distill.temperature"] == 4.0
    assert flat["teacher.augment"] == "crop, hflip"
    assert flat["data.student_splits"] == "0"
    assert list(flat)[:3] == ["seed", "device", "data.dataset"]


def test_last_best_min_max_skip_epochs_without_metric():
    r = _record("a", history=HISTORY, metrics={"test_agreement": 0.65, "teacher_test_acc": 0.97})
    # train_agreement: epochs 1..3 -> 0.50, 0.90, 0.80
    assert cmp.metric_value(r, "train_agreement", "last") == 0.80
    assert cmp.metric_value(r, "train_agreement", "best") == 0.90
    assert cmp.metric_value(r, "train_agreement", "max") == 0.90
    assert cmp.metric_value(r, "train_agreement", "min") == 0.50
    # test_agreement: epochs 0, 1, 3 -> 0.11, 0.70, 0.65 (epoch 2 not evaluated)
    assert cmp.metric_value(r, "test_agreement", "last") == 0.65
    assert cmp.metric_value(r, "test_agreement", "best") == 0.70
    assert cmp.metric_value(r, "test_agreement", "min") == 0.11
    # test_kl: 2.0, 0.9, 1.1 -> best is the minimum
    assert cmp.metric_value(r, "test_kl", "best") == 0.9
    assert cmp.metric_value(r, "test_kl", "max") == 2.0
    assert cmp.metric_value(r, "test_kl", "last") == 1.1
    # train_loss best = min = 0.7 at epoch 2
    assert cmp.metric_value(r, "train_loss", "best") == 0.7
    assert cmp.best_epoch(r, "train_loss") == 2
    assert cmp.best_epoch(r, "test_kl") == 1
    assert cmp.best_epoch(r, "test_agreement") == 1
    assert cmp.best_epoch(r, "test_acc") is None
    # only in the final metrics -> that value, whatever the aggregation
    assert cmp.metric_value(r, "teacher_test_acc", "last") == 0.97
    assert cmp.metric_value(r, "teacher_test_acc", "best") == 0.97
    assert cmp.metric_value(r, "test_ece", "last") is None


def test_last_falls_back_to_final_metrics_without_history():
    r = _record("a", metrics={"test_agreement": 0.93})
    r.pop("history")
    assert cmp.metric_value(r, "test_agreement") == 0.93


def test_unknown_agg_is_a_value_error():
    r = _record("a", history=HISTORY)
    with pytest.raises(ValueError, match="last, best, min, max"):
        cmp.metric_value(r, "test_agreement", "median")
    with pytest.raises(ValueError, match="last, best, min, max"):
        cmp.compare([r], agg="mean")


def test_compare_shape_and_agg():
    a = _record("a", history=HISTORY)
    b = _record("b", temperature=1.0, history=[{"epoch": 0, "test_agreement": 0.5},
                                                {"epoch": 1, "test_agreement": 0.6}])
    c = cmp.compare([a, b])
    assert c.columns == ["a", "b"]
    assert c.members == [["a"], ["b"]]
    assert [k for k, _ in c.metric_rows] == list(cmp.METRICS)
    assert c.metric("test_agreement") == [0.65, 0.6]
    assert c.metric("test_acc") == [None, None]
    assert c.config("distill.temperature") == [4.0, 1.0]
    assert cmp.compare([a, b], agg="best").metric("test_agreement") == [0.70, 0.6]
    assert cmp.compare([a, b], agg="min").metric("test_kl") == [0.9, None]


def test_diff_only_hides_equal_rows():
    a = _record("a", seed=0)
    b = _record("b", seed=0, temperature=1.0, augment=("crop", "hflip"))
    full = cmp.compare([a, b])
    diff = cmp.compare([a, b], diff_only=True)
    assert full.config("student.lr") == [0.01, 0.01]
    assert [k for k, _ in diff.config_rows] == ["teacher.augment", "distill.temperature"]
    assert diff.config("teacher.augment") == ["crop", "crop, hflip"]
    assert len(diff.metric_rows) == len(cmp.METRICS)


def _seed_group():
    values = [0.80, 0.82, 0.84]
    return [_record(f"r{s}", name=f"kd[seed={s},distill.temperature=4.0]", seed=s, group="aaaa" * 16,
                    history=[{"epoch": 0, "test_agreement": 0.1},
                             {"epoch": 1, "test_agreement": v}])
            for s, v in zip((2, 0, 1), values)]


def test_by_group_mean_and_sample_std():
    group = _seed_group()
    other = _record("t1", name="kd[seed=0,distill.temperature=1.0]", seed=0, temperature=1.0,
                    group="bbbb" * 16, history=[{"epoch": 0, "test_agreement": 0.5}])
    c = cmp.compare(group + [other], by_group=True)
    assert len(c.columns) == 2
    assert c.columns[0] == "kd[distill.temperature=4.0] (aaaaaaaa, n=3 seeds)"
    assert c.columns[1] == "kd[distill.temperature=1.0] (bbbbbbbb, n=1 seed)"
    assert c.headers() == [("τ=4", "n=3 seeds"), ("τ=1", "n=1 seed")]
    assert c.members == [["r2", "r0", "r1"], ["t1"]]
    cell = c.metric("test_agreement")[0]
    # mean (0.80 + 0.82 + 0.84) / 3 = 0.82; deviations -0.02, 0, 0.02 -> sqrt(0.0008 / 2) = 0.02
    assert cell.n == 3
    assert cell.mean == pytest.approx(0.82)
    assert cell.std == pytest.approx(0.02)
    # a group of one seed shows its value: no "± 0.0000"
    assert c.metric("test_agreement")[1] == MeanStd(0.5, None, 1)
    assert cmp.format_cell(c.metric("test_agreement")[1]) == "0.5000"
    assert c.metric("test_acc") == [None, None]
    assert c.config("seed") == ["0, 1, 2", "0"]
    assert c.config("distill.temperature") == [4.0, 1.0]
    diff = cmp.compare(group + [other], by_group=True, diff_only=True)
    assert [k for k, _ in diff.config_rows] == ["seed", "distill.temperature"]


def test_strip_seed():
    assert cmp.strip_seed("kd[seed=3]") == "kd"
    assert cmp.strip_seed("kd[distill.alpha=0.5,seed=3]") == "kd[distill.alpha=0.5]"
    assert cmp.strip_seed("kd[data.student_splits=[0,1],seed=1]") == "kd[data.student_splits=[0,1]]"
    assert cmp.strip_seed("plain") == "plain"


def _two_run_comparison():
    a = _record("a", history=HISTORY, metrics={"teacher_test_acc": 0.97})
    b = _record("b", temperature=1.0, history=[{"epoch": 0, "test_agreement": 0.123456}])
    return cmp.compare([a, b])


def test_csv_parses_back_to_the_same_cells():
    c = _two_run_comparison()
    rows = list(csv.reader(io.StringIO(cmp.to_csv(c))))
    assert rows[0] == ["section", "key", "a", "b"]     # the contract: run ids
    assert rows[1] == ["run", "label", "τ=4", "τ=1"]   # what people read: what sets the runs apart
    body = {(r[0], r[1]): r[2:] for r in rows[2:]}
    assert len(rows) == 2 + len(c.config_rows) + len(c.metric_rows)
    assert body[("config", "distill.temperature")] == ["4.0", "1.0"]
    assert body[("config", "teacher.augment")] == ["crop", "crop"]
    assert body[("metric", "test_agreement")] == ["0.65", "0.123456"]
    assert body[("metric", "teacher_test_acc")] == ["0.97", ""]
    assert float(body[("metric", "test_kl")][0]) == 1.1


def test_csv_group_cells():
    rows = list(csv.reader(io.StringIO(cmp.to_csv(cmp.compare(_seed_group(), by_group=True)))))
    cell = {r[1]: r[2] for r in rows[2:]}["test_agreement"]
    mean, std = (float(x) for x in cell.split(" ± "))
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)


def test_json_round_trips():
    for c in (_two_run_comparison(), cmp.compare(_seed_group(), by_group=True, agg="best")):
        text = cmp.to_json(c)
        json.loads(text)
        back = cmp.from_json(text)
        assert back == c
        assert isinstance(back.config_rows[0], tuple)


def test_markdown_table():
    md = cmp.to_markdown(_two_run_comparison())
    lines = md.strip().splitlines()
    assert lines[0] == "| run | τ=4 (a) | τ=1 (b) |"  # labels with the short id
    assert lines[1] == "|---|---|---|"
    assert all(line.startswith("| ") and line.endswith(" |") and line.count(" | ") == 2
               for line in lines[2:])
    assert "| **metrics** |  |  |" in lines
    assert "| test_agreement | 0.6500 | 0.1235 |" in lines
    assert "| test_acc | — | — |" in lines
    assert "| distill.temperature | 4.0 | 1.0 |" in lines
    metrics_at = lines.index("| **metrics** |  |  |")
    assert lines[metrics_at + 1].startswith("| train_agreement |")
    group_md = cmp.to_markdown(cmp.compare(_seed_group(), by_group=True), digits=2)
    assert "| test_agreement | 0.82 ± 0.02 |" in group_md


def test_render_rich():
    from rich.console import Console
    table = cmp.render_rich(cmp.compare(_seed_group(), by_group=True))
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "0.8200 ± 0.0200" in text and "—" in text and "distill.temperature" in text
    assert "test agr" in text and "test_agreement" not in text  # the one vocabulary (kdtui.core.vocabulary)


def test_export_runs_json_round_trips_exactly():
    records = [_record("a", history=HISTORY, metrics={"test_agreement": 0.65, "test_kl": 1.1}),
               _record("b", seed=1, metrics={"test_agreement": 0.5})]
    records[1]["error"] = None
    text = cmp.export_runs(records, "json")
    assert cmp.import_runs_json(text) == records
    with pytest.raises(ValueError):
        cmp.import_runs_json('{"no": "id"}')


def test_export_runs_csv_and_md():
    records = [_record("a", metrics={"test_agreement": 0.65, "teacher_test_acc": 0.97}),
               _record("b", seed=1, temperature=1.0, metrics={"test_agreement": 0.5})]
    rows = list(csv.DictReader(io.StringIO(cmp.export_runs(records, "csv"))))
    assert len(rows) == 2
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["group_hash"] == "g" * 64 and rows[0]["status"] == "done"
    assert rows[1]["distill.temperature"] == "1.0" and rows[1]["seed"] == "1"
    assert rows[0]["test_agreement"] == "0.65" and rows[1]["teacher_test_acc"] == ""
    md = cmp.export_runs(records, "md").strip().splitlines()
    assert len(md) == 4 and md[0].startswith("| id | label | name | status | group_hash |")
    assert [r["label"] for r in rows] == ["seed=0, τ=4", "seed=1, τ=1"]
    assert "0.6500" in md[2]
    with pytest.raises(ValueError, match="csv, json, md"):
        cmp.export_runs(records, "xlsx")


def test_nan_is_ignored_by_best_but_kept_by_last():
    r = _record("a", history=[{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": math.nan}])
    assert cmp.metric_value(r, "train_loss", "best") == 0.5
    assert math.isnan(cmp.metric_value(r, "train_loss", "last"))


def test_mean_std_by_hand_and_a_diverged_seed_makes_the_group_nan():
    # 0.80, 0.84, 0.88: mean 0.84; squared deviations 0.0016 + 0 + 0.0016 over n-1 = 2 -> std 0.04.
    stat = cmp.mean_std([0.80, None, 0.84, "n/a", 0.88])
    assert stat.n == 3 and stat.mean == pytest.approx(0.84) and stat.std == pytest.approx(0.04)
    assert cmp.mean_std([0.5]) == MeanStd(0.5, None, 1)
    assert cmp.mean_std([None, True]) is None          # absent or not a number: nothing to average
    # A seed that diverged (NaN, or inf) is kept and poisons the group instead of being averaged away.
    for bad in (math.nan, math.inf):
        stat = cmp.mean_std([0.80, bad, 0.88])
        assert stat.n == 3 and math.isnan(stat.mean) and math.isnan(stat.std)


def test_seed_group_with_a_diverged_run_compares_and_exports():
    # statistics.stdev raised AttributeError on a NaN here before mean_std handled it.
    group = _seed_group()
    group[1]["metrics"]["test_agreement"] = math.nan
    group[1]["history"] = []
    c = cmp.compare(group, by_group=True)
    cell = c.metric("test_agreement")[0]
    assert math.isnan(cell.mean) and cell.n == len(group)
    assert "| test_agreement | nan ± nan |" in cmp.to_markdown(c, digits=2)


def test_markdown_cells_cannot_break_the_table():
    from kdtui.analysis.markdown import md_table
    text = md_table(["run", "name"], [["a|b", "line\r\nbreak\rand\nmore \\ end"]])
    assert text.splitlines() == ["| run | name |", "|---|---|",
                                 "| a\\|b | line break and more \\\\ end |"]


def test_mean_std_counts_distinct_seeds_and_flags_replicates():
    # Two runs with seed 0 (0.5, 0.7) are one sample: their mean 0.6; with seed 1 (0.8) n = 2.
    stat = cmp.mean_std([0.5, 0.7, 0.8, None], seeds=[0, 0, 1, 2])
    assert (stat.n, stat.runs, stat.shares_seeds) == (2, 3, True)
    assert stat.mean == pytest.approx(0.7) and stat.std == pytest.approx(0.1414, abs=1e-4)
    assert stat.format() == "0.7000 ± 0.1414 †"
    same = cmp.mean_std([0.5, 0.7], seeds=[0, 0])        # the previous report counted this as n = 2
    assert (same.n, same.runs, same.std) == (1, 2, None) and same.format() == "0.6000 †"
    assert cmp.mean_std([0.6228], seeds=[3]).format() == "0.6228"
    assert cmp.mean_std([None], seeds=[0]) is None


def test_by_group_counts_shared_seeds_once():
    group = _seed_group()
    twin = _record("r9", name="kd[seed=0,distill.temperature=4.0]", seed=0, group="aaaa" * 16,
                   history=[{"epoch": 1, "test_agreement": 0.86}])
    c = cmp.compare(group + [twin], by_group=True)
    cell = c.metric("test_agreement")[0]
    # seeds 2, 0, 1 with 0.80, 0.82 (and 0.86 for the second seed-0 run: 0.84), 0.84
    assert (cell.n, cell.runs) == (3, 4) and cell.mean == pytest.approx((0.80 + 0.84 + 0.84) / 3)
    assert c.columns[0].endswith("(aaaaaaaa, n=3 seeds, 4 runs †)")
    back = cmp.from_json(cmp.to_json(c))
    assert back.metric("test_agreement")[0] == cell and back.headers() == c.headers()
