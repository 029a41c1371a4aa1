"""Issue 12 in the CLI: short ids everywhere, progress with elapsed time and ETA in 80 columns, one
vocabulary, compare labels in tables and exports, honest group statistics, `runs show`'s config,
the summary's label, the GPU line of the app, and each record's peak memory.

Real `kdtui` processes on real registries (fake finished runs where only the record matters), a
real tiny run for the memory peak, rich consoles of a fixed width for the progress display.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import pytest
from cli_helpers import (
    KDTUI,
    cli_env,
    fake_run,
    json_out,
    kdtui,
    record,
    tiny_spec,
    write,
)
from rich.console import Console

from kdtui.core.events import EpochMetrics, PhaseEnd, PhaseStart, Progress

# -- ids ---------------------------------------------------------------------------------------------

@pytest.fixture
def sweep_runs(tmp_path):
    """Three finished runs of a temperature sweep (seeds 0, 0, 1 at τ=4; seed 0 at τ=1)."""
    ws = tmp_path / "ws"
    points = [("261129-185038-b09d", 4.0, 0, 0.80), ("261129-185038-c0fe", 4.0, 0, 0.84),
              ("261129-185039-d00d", 4.0, 1, 0.90), ("261129-185040-e11e", 1.0, 0, 0.60)]
    for run_id, temperature, seed, agreement in points:
        name = f"kd-digits-distillation-sweep[distill.temperature={temperature:g},seed={seed}]"
        fake_run(ws, run_id, name=name, group_hash=f"{temperature:g}" * 64,
                 spec={"seed": seed, "distill": {"temperature": temperature, "loss": "kl"}},
                 metrics={"train_agreement": 0.95, "train_agreement_eval": 0.93, "test_agreement": agreement,
                          "test_acc": 0.8, "test_kl": 0.1, "lr": 0.0})
        (ws / run_id / "events.jsonl").write_text("")  # no history: the final metrics are what compare takes
    return ws


def _kdtui_at(columns: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*KDTUI, *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
                          env={**cli_env(), "COLUMNS": str(columns)}, timeout=120)


def test_the_random_suffix_or_its_prefix_names_a_run(sweep_runs):
    assert json_out(kdtui("runs", "show", "b09d", "--workspace", sweep_runs, "--json"))["id"] == "261129-185038-b09d"
    assert json_out(kdtui("runs", "show", "c0", "--workspace", sweep_runs, "--json"))["id"] == "261129-185038-c0fe"
    # the whole-id prefix still works
    assert json_out(kdtui("runs", "show", "261129-18504", "--workspace", sweep_runs, "--json"))["id"] \
        == "261129-185040-e11e"


def test_an_ambiguous_suffix_prefix_is_one_line(tmp_path):
    ws = tmp_path / "ws"
    for run_id in ("261129-185038-b09d", "261129-185039-b0aa", "261129-185040-cccc"):
        fake_run(ws, run_id)
    result = kdtui("runs", "show", "b0", "--workspace", ws)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "ambiguous" in lines[0] and "261129-185038-b09d" in lines[0] and "261129-185039-b0aa" in lines[0]
    # `runs rm` takes a suffix too (it checks every id's shape before it deletes anything)
    removed = kdtui("runs", "rm", "cccc", "--yes", "--workspace", ws)
    assert removed.returncode == 0, removed.stderr
    assert record(ws, "261129-185040-cccc") is None and not (ws / "261129-185040-cccc").exists()


def test_runs_list_shows_short_ids_unless_full_ids(sweep_runs):
    result = _kdtui_at(80, "runs", "list", "--workspace", sweep_runs)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0].split()[0] == "id"
    assert [line.split()[0] for line in lines[1:]] == ["b09d", "c0fe", "d00d", "e11e"]
    assert "261129-" not in result.stdout
    # the name is cut in the middle: the sweep values, the part that differs, stay
    assert all(len(line) <= 80 for line in lines)
    assert "…" in lines[1] and lines[1].split()[1].endswith("[τ=4,seed=0]")
    assert lines[4].split()[1].endswith("[τ=1,seed=0]")
    full = _kdtui_at(80, "runs", "list", "--full-ids", "--workspace", sweep_runs)
    assert full.stdout.splitlines()[1].split()[0] == "261129-185038-b09d"


def test_a_shared_suffix_is_listed_whole(tmp_path):
    ws = tmp_path / "ws"
    for run_id in ("261129-185038-b09d", "261130-090000-b09d", "261130-090001-1234"):
        fake_run(ws, run_id)
    ids = [line.split()[0] for line in kdtui("runs", "list", "--workspace", ws).stdout.splitlines()[1:]]
    assert ids == ["261129-185038-b09d", "261130-090000-b09d", "1234"]


# -- progress ------------------------------------------------------------------------------------------

def _events(now: float) -> list[dict]:
    """A teacher that took 10 s for 20 steps, then a student 182 epochs into 200 at 0.1 s a step."""
    teacher = [{"type": PhaseStart.type, "phase": "teacher", "index": 0, "total": 1, "epochs": 2,
                "steps_per_epoch": 10, "t": now - 400}]
    teacher += [{"type": Progress.type, "phase": "teacher", "index": 0, "epoch": 1 + i // 10, "step": 1 + i % 10,
                 "steps": 10, "t": now - 400 + 0.5 * (i + 1)} for i in range(20)]
    teacher += [{"type": PhaseEnd.type, "phase": "teacher", "index": 0, "total": 1, "t": now - 389}]
    student = [{"type": PhaseStart.type, "phase": "student", "index": 0, "epochs": 200, "steps_per_epoch": 2,
                "t": now - 380}]
    student += [{"type": Progress.type, "phase": "student", "index": 0, "epoch": 182, "step": s, "steps": 2,
                 "t": now - 10 + s} for s in (1, 2)]
    student += [{"type": EpochMetrics.type, "phase": "student", "index": 0, "epoch": 182,
                 "metrics": {"train_agreement": 0.9123, "test_agreement": 0.8812, "test_acc": 0.9011}, "t": now - 8}]
    return teacher + student


@pytest.mark.parametrize("width", [80, 100])
def test_progress_fits_the_terminal_with_elapsed_eta_and_a_whole_epoch_counter(width):
    from rich.cells import cell_len

    from kdtui.cli.progress import RunProgress

    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    display = RunProgress(console, "261129-185038-b09d",
                          "kd-digits-distillation-sweep[distill.temperature=4,student.init_lambda=0.25,seed=0]")
    for event in _events(time.time()):
        display(event)
    with console.capture() as captured:
        console.print(display.progress.get_renderable())
    lines = captured.get().splitlines()
    assert lines and all(cell_len(line) <= width for line in lines), lines
    text = "\n".join(lines)
    assert "epoch 182/200" in text and "182…" not in text
    assert "elapsed 6m" in text and "ETA " in text and "ETA —" not in text
    assert "teacher 1/1" in text and "b09d" in text and "seed=0]" in text  # the name's end is kept
    assert "test agr 0.881" in text


# -- one vocabulary, labels, statistics ----------------------------------------------------------------

def test_runs_show_uses_the_vocabulary_numbers_teachers_from_1_and_prints_the_config(sweep_runs):
    store_dir = sweep_runs
    from kdtui.core.registry import RunStore

    RunStore(store_dir).update("261129-185038-b09d", teachers=[{"key": "k" * 64, "member": 0, "reused": False,
                                                                "test_acc": 0.97}])
    result = _kdtui_at(100, "runs", "show", "b09d", "--workspace", store_dir)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "teacher 1: kkkkkkkkkkkk trained, test acc 0.9700" in text and "teacher 0" not in text
    assert "train agr" in text and "test agr" in text and "train_agreement" not in text
    assert "config (resolved):" in text and "distill: temperature=4 loss=kl" in text and "run: seed=0" in text
    assert "lr" not in [line.split()[0] for line in text.splitlines() if line.strip() and "│" not in line]


def test_runs_tail_numbers_teachers_from_1(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, "261129-185038-b09d")
    now = time.time()
    lines = [{"t": now, "type": PhaseStart.type, "phase": "teacher", "index": 0, "total": 2, "epochs": 1,
              "steps_per_epoch": 1},
             {"t": now, "type": EpochMetrics.type, "phase": "teacher", "index": 1, "epoch": 1,
              "metrics": {"test_acc": 0.9}}]
    with open(ws / "261129-185038-b09d" / "events.jsonl", "a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))
    result = kdtui("runs", "tail", "b09d", "--workspace", ws)
    assert "teacher 1/2: start, 1 epochs × 1 steps" in result.stdout
    assert "teacher 2 epoch 1  test acc 0.900" in result.stdout
    assert "student epoch 2  train agr" in result.stdout and "teacher 0" not in result.stdout


def test_compare_heads_columns_with_labels_and_short_ids(sweep_runs):
    result = kdtui("runs", "compare", "b09d", "e11e", "--workspace", sweep_runs)
    assert result.returncode == 0, result.stderr
    header = "\n".join(result.stdout.splitlines()[:4])
    assert "τ=4" in header and "τ=1" in header and "b09d" in header and "e11e" in header
    assert "test agr" in result.stdout and "clean train agr" in result.stdout
    as_json = json.loads(kdtui("runs", "compare", "b09d", "e11e", "--workspace", sweep_runs, "--json").stdout)
    assert as_json["columns"] == ["261129-185038-b09d", "261129-185040-e11e"]  # the contract keeps ids
    assert [m["key"] for m in as_json["metrics"]][:3] == ["train_agreement", "train_agreement_eval", "test_agreement"]


def test_compare_by_group_counts_seeds_not_runs(sweep_runs):
    result = kdtui("runs", "compare", "b09d", "c0fe", "d00d", "e11e", "--by-group", "--workspace", sweep_runs)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # τ=4: seeds 0 (0.80 and 0.84 -> 0.82) and 1 (0.90): n = 2 seeds, 3 runs, flagged
    assert "n=2 seeds, 3 runs †" in text and "0.8600 ± 0.0566 †" in text
    # τ=1: one run: its value, no "± 0.0000"
    row = next(line for line in text.splitlines() if "test agr" in line)
    assert "n=1 seed" in text and row.rstrip("│ ").endswith("│   0.6000")
    cells = json.loads(kdtui("runs", "compare", "b09d", "c0fe", "d00d", "e11e", "--by-group", "--json",
                             "--workspace", sweep_runs).stdout)
    agreement = next(m for m in cells["metrics"] if m["key"] == "test_agreement")["values"]
    assert agreement[0]["n"] == 2 and agreement[0]["runs"] == 3 and agreement[1]["std"] is None


def test_export_labels_each_run_and_keeps_contract_names(sweep_runs):
    text = kdtui("runs", "export", "b09d", "e11e", "--format", "csv", "--workspace", sweep_runs).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["label"] for r in rows] == ["τ=4", "τ=1"] and "test_agreement" in rows[0]
    md = kdtui("runs", "export", "b09d", "e11e", "--format", "md", "--workspace", sweep_runs).stdout
    assert md.splitlines()[0].startswith("| id | label | name |") and "| τ=4 |" in md


def test_summary_prints_the_label_and_drops_lr(sweep_runs):
    from kdtui.cli.progress import summary_table
    from kdtui.core.registry import RunStore

    console = Console(width=120, file=io.StringIO(), color_system=None)
    with console.capture() as captured:
        console.print(summary_table(RunStore(sweep_runs).get("261129-185038-b09d"), "τ=4, seed=0"))
    text = captured.get()
    assert "τ=4, seed=0" in text and "b09d" in text and "test agr" in text
    assert "lr" not in text.split() and "0.0000" not in text


# -- device use ----------------------------------------------------------------------------------------

def test_gpu_line_formats_readings():
    from kdtui.tui.widgets.gpus import GpuReading, format_gpus

    readings = [GpuReading(0, 87, int(12.25 * 2**30), int(79.6 * 2**30)), GpuReading(1, 0, 2**29, int(79.6 * 2**30))]
    assert format_gpus(readings) == "GPU0 87% 12.2/79.6G · GPU1 0% 0.5/79.6G"
    assert format_gpus([]) == ""


def test_a_run_records_its_peak_memory(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "tiny.toml", tiny_spec("peak", teacher_epochs=1, student_epochs=1))
    result = kdtui("run", spec, "--workspace", ws, "--json")
    assert result.returncode == 0, result.stderr
    done = json_out(result)
    assert done["peak_memory_kind"] == "rss"
    # torch and the digits data alone take tens of MiB: a KiB count taken as bytes would be < 1 MiB
    assert done["peak_memory_bytes"] > 50 * 2**20
    assert record(ws, done["id"])["peak_memory_bytes"] == done["peak_memory_bytes"]
