"""Reports: real PNG figures of the expected size, a results table equal to the registry, an index.

The main fixture makes real runs through the `kdtui` console script: digits, 2 temperatures x 2
seeds, 1 teacher epoch and 2 student epochs (one process, so torch starts once).
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from cli_helpers import KDTUI, cli_env, tiny_spec
from kdtui.analysis.compare import flatten_spec
from kdtui.core.registry import RunStore, record_with_history
from kdtui.analysis.report import (FIGURE_DPI, FIGURE_SIZE_IN, TABLE_METRICS, build_report, group_settings, report_for,
                          varied_keys)
from kdtui.core.vocabulary import metric_label
from kdtui.core.workspace import Workspace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED_PX = (round(FIGURE_SIZE_IN[0] * FIGURE_DPI), round(FIGURE_SIZE_IN[1] * FIGURE_DPI))   # (840, 540)
SUMMARY_PNGS = ["test_agreement.png", "train_agreement.png", "train_agreement_eval.png", "test_acc.png",
                "test_kl.png"]
CURVE_PNGS = ["curves_train_agreement.png", "curves_test_agreement.png"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    spec = root / "sweep.toml"
    spec.write_text(tiny_spec("report-sweep", teacher_epochs=1, student_epochs=2,
                              sweep='seed = [0, 1]\n"distill.temperature" = [1.0, 4.0]'))
    ws = root / "ws"
    result = subprocess.run([*KDTUI, "run", str(spec), "--workspace", str(ws), "--json"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads(result.stdout)
    assert [r["status"] for r in records] == ["done"] * 4
    return ws


def _records(ws: Path) -> list[dict]:
    store = RunStore(ws)
    return [record_with_history(store, Workspace(ws), r["id"]) for r in store.all()]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    try:
        from PIL import Image
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            return image.size
    except ImportError:  # pragma: no cover - matplotlib's reader as the fallback
        import matplotlib.image
        height, width = matplotlib.image.imread(path).shape[:2]
        return width, height


def _table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The first Markdown table: header and rows (cells stripped)."""
    block: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            block.append(line)
        elif block:
            break
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block]
    return cells[0], cells[2:]


def test_build_report_writes_real_pngs_results_and_index(workspace, tmp_path):
    records = _records(workspace)
    assert all(r["history"] for r in records)
    out = tmp_path / "report"
    index = build_report(records, out, "temperature sweep")
    assert index == out / "index.md"

    for name in SUMMARY_PNGS + CURVE_PNGS:
        assert _png_size(out / name) == EXPECTED_PX, name

    # results.md: one row per temperature, numbers equal to the registry's, computed here independently
    header, rows = _table((out / "results.md").read_text())
    assert header[:3] == ["τ", "n", "seeds"]   # the short names the app and runs compare use
    assert header[3:] == [metric_label(m) for m in TABLE_METRICS]
    registry = RunStore(workspace).all(details=True)
    assert len(rows) == 2
    for row in rows:
        temperature = float(row[0])
        group = [r for r in registry if r["spec"]["distill"]["temperature"] == temperature]
        assert len(group) == 2 and row[1] == "2"
        assert row[2] == ", ".join(str(r["spec"]["seed"]) for r in group)
        for metric, cell in zip(TABLE_METRICS, row[3:]):
            values = [r["metrics"][metric] for r in group]
            expected = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            assert cell == expected, (metric, temperature)

    # index.md links every file of the report, and only files that exist
    text = index.read_text()
    links = set(re.findall(r"\]\(([^)\s]+)\)", text))
    files = {p.name for p in out.iterdir()} - {"index.md"}
    assert links == files
    assert "temperature sweep" in text and "distill.temperature" in text


def test_varied_settings_are_detected_without_seed(workspace):
    records = _records(workspace)
    assert varied_keys(records) == ["distill.temperature"]
    settings, keys = group_settings(records)
    assert keys == ["distill.temperature"]
    assert [len(s.records) for s in settings] == [2, 2]
    assert {s.label for s in settings} == {"τ=1", "τ=4"}
    assert all(len({r["group_hash"] for r in s.records}) == 1 for s in settings)


def test_report_for_group_and_ids(workspace):
    store = RunStore(workspace)
    runs = store.all()
    group = runs[0]["group_hash"]
    index = report_for(workspace, group=group[:8])
    assert index == workspace / "reports" / f"group-{group[:8]}" / "index.md"
    header, rows = _table((index.parent / "results.md").read_text())
    assert len(rows) == 1 and rows[0][header.index("n")] == "2"
    assert _png_size(index.parent / "test_agreement.png") == EXPECTED_PX

    ids = [r["id"] for r in runs[:3]]
    index = report_for(workspace, run_ids=ids)
    assert index.parent.parent == workspace / "reports"
    assert "3 runs" in index.read_text()

    with pytest.raises(ValueError, match="exactly one"):
        report_for(workspace)
    with pytest.raises(ValueError, match="no finished runs"):
        report_for(workspace, group="ffffffffff")


# ---------------------------------------------------------------------------------------------
# Without runs: synthetic records exercise layouts and the optional columns
# ---------------------------------------------------------------------------------------------

def _record(i: int, seed: int, members: int, temperature: float, extra: list, agreement: float,
            independent: float | None = None) -> dict:
    spec = {"name": f"x[seed={seed}]", "seed": seed, "device": "cpu",
            "data": {"dataset": "digits", "root": f"/data/{i}", "download": True, "extra": extra},
            "teacher": {"model": "lenet5", "members": members},
            "student": {"model": "lenet5", "epochs": 3},
            "distill": {"temperature": temperature, "augment": ["crop"]}}
    metrics = {"test_agreement": agreement, "train_agreement": agreement + 0.05, "train_agreement_eval": agreement,
               "test_acc": 0.9, "test_kl": 0.1, "teacher_test_acc": 0.95}
    if independent is not None:
        metrics["independent_test_agreement"] = independent
        metrics["independent_test_kl"] = 0.2
    group = json.dumps({k: v for k, v in flatten_spec(spec).items()
                        if k not in ("seed", "device", "data.root", "data.download")}, sort_keys=True)
    return {"id": f"run{i}", "name": spec["name"], "status": "done", "spec": spec, "group_hash": group,
            "metrics": metrics,
            "history": [{"epoch": e, "test_agreement": agreement * e / 3, "train_agreement": agreement * e / 3}
                        for e in range(4)]}


def test_grid_with_independent_control_and_tensor_files(tmp_path):
    records, i = [], 0
    for seed in (0, 1, 2):
        for members in (1, 3):
            for temperature in (1.0, 4.0, 16.0):
                for extra in ([], ["tensors:~/.cache/kdtui/data/gan-50000.pt"]):
                    i += 1
                    records.append(_record(i, seed, members, temperature, extra, 0.5 + 0.01 * i, 0.4 + 0.01 * i))
    assert varied_keys(records) == ["data.extra", "teacher.members", "distill.temperature"]
    index = build_report(records, tmp_path, "grid")
    header, rows = _table((tmp_path / "results.md").read_text())
    assert header[-2:] == ["independent_test_agreement", "independent_test_kl"]
    assert len(rows) == 12 and {row[0] for row in rows} == {"none", "gan-50000"}
    for name in SUMMARY_PNGS + CURVE_PNGS:
        assert _png_size(tmp_path / name) == EXPECTED_PX
    # a second report into the same folder with fewer figures leaves no stale files behind
    for r in records:
        r["history"] = []
    build_report(records, tmp_path, "grid again")
    assert not (tmp_path / "curves_test_agreement.png").exists()
    links = set(re.findall(r"\]\(([^)\s]+)\)", index.read_text()))
    assert links == {p.name for p in tmp_path.iterdir()} - {"index.md"}


def test_single_setting_and_explicit_varied(tmp_path):
    records = [_record(i, seed, 1, 4.0, [], 0.7 + 0.01 * seed) for i, seed in enumerate((0, 1, 2))]
    assert varied_keys(records) == []
    build_report(records, tmp_path / "one", "one setting")
    header, rows = _table((tmp_path / "one" / "results.md").read_text())
    assert header[:2] == ["n", "seeds"] and rows[0][:2] == ["3", "0, 1, 2"]
    assert _png_size(tmp_path / "one" / "test_agreement.png") == EXPECTED_PX
    # a caller may name the varied settings (here one that does not differ)
    build_report(records, tmp_path / "named", "named", varied=["distill.temperature"])
    header, rows = _table((tmp_path / "named" / "results.md").read_text())
    assert header[0] == "τ" and rows[0][0] == "4"
    with pytest.raises(ValueError):
        build_report([], tmp_path / "none", "nothing")


def test_a_diverged_seed_shows_as_nan_not_as_the_survivors_mean(tmp_path):
    # The report and the comparison share one mean_std: a NaN final metric (a seed that diverged)
    # makes its setting's cell NaN; averaging the two surviving seeds (0.70, 0.72) would print 0.7100.
    records = [_record(i, seed, 1, 4.0, [], 0.7 + 0.01 * seed) for i, seed in enumerate((0, 1, 2))]
    records[1]["metrics"]["test_agreement"] = float("nan")
    build_report(records, tmp_path, "diverged")
    header, rows = _table((tmp_path / "results.md").read_text())
    assert rows[0][header.index("test agr")] == "nan ± nan"
    assert rows[0][header.index("test acc")] == "0.9000 ± 0.0000"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_runs_that_share_a_seed_are_one_sample_not_two(tmp_path):
    # The previous report counted two runs with the same seed as n = 2 and printed a std for them.
    records = [_record(0, 0, 1, 4.0, [], 0.70), _record(1, 0, 1, 4.0, [], 0.72)]
    build_report(records, tmp_path, "replicates")
    text = (tmp_path / "results.md").read_text()
    header, rows = _table(text)
    assert rows[0][header.index("n")] == "1" and rows[0][header.index("seeds")] == "0, 0 †"
    assert rows[0][header.index("test agr")] == "0.7100 †"   # the seed's value; no ± for one seed
    assert "±" not in rows[0][header.index("test acc")]
    # a single run shows its value
    build_report([_record(2, 5, 1, 4.0, [], 0.6228)], tmp_path / "one", "one run")
    header, rows = _table((tmp_path / "one" / "results.md").read_text())
    assert rows[0][header.index("test agr")] == "0.6228" and rows[0][header.index("n")] == "1"
