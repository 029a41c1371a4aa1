"""Real runs through the CLI: a seed sweep, the teacher store (reuse, and two runs racing for the same
teacher), then `runs compare` and `runs export` checked against numbers computed here by hand.

One workspace for the module, populated by two fixtures:
- `sweep_runs`: `kdtui run sweep.toml --json` with [sweep] seed = [0, 1] (two runs, one process);
- `racing_pair`: two `kdtui run` processes started together on specs that differ only in
  distill.temperature (seed 3, so their teacher is not in the store yet).
"""
from __future__ import annotations

import csv
import io
import json
import statistics

import pytest

from cli_helpers import events, json_out, kdtui, record, start_kdtui, store, tiny_spec, write

STUDENT_EPOCHS = 3


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return tmp_path_factory.mktemp("workflow") / "ws"


@pytest.fixture(scope="module")
def sweep_runs(ws, tmp_path_factory):
    spec = write(tmp_path_factory.mktemp("specs") / "sweep.toml",
                 tiny_spec("seeds", student_epochs=STUDENT_EPOCHS, sweep="seed = [0, 1]"))
    result = kdtui("run", spec, "--workspace", ws, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    records = json_out(result)   # stdout is JSON only: the progress went to stderr
    assert isinstance(records, list)
    return records


@pytest.fixture(scope="module")
def racing_pair(ws, tmp_path_factory):
    folder = tmp_path_factory.mktemp("race")
    procs = []
    for temperature in (2.0, 4.0):
        spec = write(folder / f"t{temperature}.toml",
                     tiny_spec("race", seed=3, student_epochs=STUDENT_EPOCHS, distill=f"temperature = {temperature}"))
        procs.append(start_kdtui("run", spec, "--workspace", ws, "--json", log_dir=folder, name=f"t{temperature}"))
    for proc in procs:
        proc.wait(timeout=300)
    outputs = [(folder / f"t{t}.out").read_text() for t in (2.0, 4.0)]
    for proc, t in zip(procs, (2.0, 4.0)):
        assert proc.returncode == 0, (folder / f"t{t}.err").read_text()[-3000:]
    return [json.loads(text) for text in outputs]


def history(ws, run_id: str) -> list[dict]:
    return json_out(kdtui("runs", "show", run_id, "--workspace", ws, "--json"))["history"]


# -- sweep -------------------------------------------------------------------------------------------

def test_seed_sweep_makes_two_runs_in_one_group(ws, sweep_runs):
    assert len(sweep_runs) == 2
    a, b = sweep_runs
    assert a["status"] == b["status"] == "done"
    assert (a["spec"]["seed"], b["spec"]["seed"]) == (0, 1)
    assert a["group_hash"] == b["group_hash"]
    assert a["spec_hash"] != b["spec_hash"]
    assert a["name"] == "seeds[seed=0]" and b["name"] == "seeds[seed=1]"
    # Different seeds, different teachers: both trained, under different keys.
    assert [t["reused"] for t in a["teachers"] + b["teachers"]] == [False, False]
    assert a["teachers"][0]["key"] != b["teachers"][0]["key"]
    # The registry agrees with what `run --json` printed, and every run has its folder and history.
    listed = json_out(kdtui("runs", "list", "--workspace", ws, "--json", "--name", "seeds"))
    assert [r["id"] for r in listed] == [a["id"], b["id"]]
    for run in sweep_runs:
        assert (ws / run["id"] / "spec.toml").is_file()
        assert [row["epoch"] for row in history(ws, run["id"])] == list(range(STUDENT_EPOCHS + 1))


# -- teacher store -----------------------------------------------------------------------------------

def teacher_epoch_events(ws, run_id: str) -> list[dict]:
    return [e for e in events(ws, run_id, types=("epoch",)) if e.get("phase") == "teacher"]


def test_racing_runs_train_the_teacher_once(ws, racing_pair):
    assert [r["status"] for r in racing_pair] == ["done", "done"]
    reused = [r["teachers"][0]["reused"] for r in racing_pair]
    assert sorted(reused) == [False, True], reused
    trained_epochs = [len(teacher_epoch_events(ws, r["id"])) for r in racing_pair]
    assert sorted(trained_epochs) == [0, 1], trained_epochs
    assert racing_pair[0]["teachers"][0]["key"] == racing_pair[1]["teachers"][0]["key"]
    # Exactly one trained copy in the store, with its metadata.
    key = racing_pair[0]["teachers"][0]["key"]
    assert (ws / "teachers" / key / "teacher.pt").is_file()
    assert not (ws / "teachers" / key / "progress.pt").exists()


def test_reused_teacher_trains_nothing(ws, racing_pair):
    trainer = next(r for r in racing_pair if not r["teachers"][0]["reused"])
    reuser = next(r for r in racing_pair if r["teachers"][0]["reused"])
    stored = record(ws, reuser["id"])
    assert stored["teachers"][0]["reused"] is True
    assert stored["teachers"][0]["key"] == trainer["teachers"][0]["key"]
    starts = [e for e in events(ws, reuser["id"], types=("phase_start",)) if e["phase"] == "teacher"]
    assert len(starts) == 1 and starts[0]["reused"] is True
    assert teacher_epoch_events(ws, reuser["id"]) == []
    assert not any(e.get("phase") == "teacher" for e in events(ws, reuser["id"], types=("progress",)))
    # Same teacher, so the same teacher metrics.
    assert stored["metrics"]["teacher_test_acc"] == trainer["metrics"]["teacher_test_acc"]
    # The trainer's own events: a real teacher phase.
    assert len(teacher_epoch_events(ws, trainer["id"])) == 1


def test_same_teacher_settings_later_reuse_it(ws, sweep_runs, tmp_path):
    """A run started after the sweep, same teacher settings and seed, different distillation."""
    spec = write(tmp_path / "later.toml", tiny_spec("later", student_epochs=1, distill="temperature = 1.0"))
    later = json_out(kdtui("run", spec, "--workspace", ws, "--json"))
    assert later["status"] == "done"
    assert later["teachers"][0]["reused"] is True
    assert later["teachers"][0]["key"] == sweep_runs[0]["teachers"][0]["key"]
    assert teacher_epoch_events(ws, later["id"]) == []
    starts = [e for e in events(ws, later["id"], types=("phase_start",)) if e["phase"] == "teacher"]
    assert [e["reused"] for e in starts] == [True]
    assert kdtui("runs", "rm", later["id"], "--workspace", ws, "--yes").returncode == 0


# -- compare -----------------------------------------------------------------------------------------

def rows(payload: dict, section: str) -> dict:
    return {row["key"]: row["values"] for row in payload[section]}


def test_compare_last_and_best_match_the_histories(ws, racing_pair):
    a, b = (r["id"] for r in racing_pair)
    histories = [history(ws, a), history(ws, b)]
    last = json_out(kdtui("runs", "compare", a[:-1], b, "--workspace", ws, "--json"))
    assert last["columns"] == [a, b] and last["agg"] == "last"
    metrics = rows(last, "metrics")
    for i, h in enumerate(histories):
        assert metrics["test_agreement"][i] == h[-1]["test_agreement"]
        assert metrics["train_agreement"][i] == h[-1]["train_agreement"]
        assert metrics["test_agreement"][i] == racing_pair[i]["metrics"]["test_agreement"]
    config = rows(last, "config")
    assert config["distill.temperature"] == [2.0, 4.0]

    best = json_out(kdtui("runs", "compare", a, b, "--workspace", ws, "--json", "--agg", "best"))
    metrics = rows(best, "metrics")
    for i, h in enumerate(histories):
        assert metrics["test_agreement"][i] == max(row["test_agreement"] for row in h)
        assert metrics["test_acc"][i] == max(row["test_acc"] for row in h)
        assert metrics["test_kl"][i] == min(row["test_kl"] for row in h)              # lower is better
        assert metrics["train_loss"][i] == min(row["train_loss"] for row in h if "train_loss" in row)
    low = rows(json_out(kdtui("runs", "compare", a, b, "--workspace", ws, "--json", "--agg", "min")), "metrics")
    for i, h in enumerate(histories):
        assert low["test_agreement"][i] == min(row["test_agreement"] for row in h)

    diff = json_out(kdtui("runs", "compare", a, b, "--workspace", ws, "--json", "--diff-only"))
    assert set(rows(diff, "config")) == {"distill.temperature"}


def test_compare_by_group_is_mean_and_std_across_seeds(ws, sweep_runs, racing_pair):
    ids = [r["id"] for r in sweep_runs + racing_pair]
    histories = {run_id: history(ws, run_id) for run_id in ids}
    def last(h, m):
        return [r[m] for r in h if m in r][-1]   # epoch 0 has no train_agreement: skipped, as compare does

    def best(h, m):
        return max(r[m] for r in h if m in r)

    for agg, pick in (("last", last), ("best", best)):
        payload = json_out(kdtui("runs", "compare", *ids, "--workspace", ws, "--json", "--by-group", "--agg", agg))
        assert payload["by_group"] is True
        # The τ = 4 racer (seed 3) differs from the sweep's runs only by its seed: same group.
        assert payload["members"] == [[ids[0], ids[1], ids[3]], [ids[2]]]
        assert "n=3" in payload["columns"][0] and "n=1" in payload["columns"][1]
        assert rows(payload, "config")["seed"] == ["0, 1, 3", "3"]
        group = [ids[0], ids[1], ids[3]]
        for metric in ("test_agreement", "test_acc", "train_agreement"):
            values = [pick(histories[run_id], metric) for run_id in group]
            cell = rows(payload, "metrics")[metric][0]
            assert cell["n"] == 3
            assert cell["mean"] == pytest.approx(statistics.mean(values), rel=1e-12, abs=1e-15)
            assert cell["std"] == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-15)
        single = rows(payload, "metrics")["test_agreement"][1]
        # One seed: its value alone, no spread to speak of.
        assert single == {"mean": pick(histories[ids[2]], "test_agreement"), "std": None, "n": 1, "runs": 1}


def test_compare_text_and_bad_agg(ws, racing_pair):
    a, b = (r["id"] for r in racing_pair)
    text = kdtui("runs", "compare", a, b, "--workspace", ws)
    assert text.returncode == 0 and "test agr" in text.stdout and "distill.temperature" in text.stdout
    assert "τ=" in text.stdout  # columns are headed by what differs between the runs
    bad = kdtui("runs", "compare", a, b, "--workspace", ws, "--agg", "median")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "median" in bad.stderr


# -- export ------------------------------------------------------------------------------------------

def test_export_json_round_trips_to_show(ws, sweep_runs, racing_pair):
    ids = [r["id"] for r in sweep_runs + racing_pair]
    exported = json_out(kdtui("runs", "export", *ids, "--workspace", ws, "--format", "json"))
    shown = [json_out(kdtui("runs", "show", run_id, "--workspace", ws, "--json")) for run_id in ids]
    assert exported == shown
    everything = json_out(kdtui("runs", "export", "--workspace", ws, "--format", "json"))
    assert {r["id"] for r in everything} == set(ids)


def test_export_csv_has_one_row_per_run_with_its_metrics(ws, sweep_runs, racing_pair, tmp_path):
    runs = sweep_runs + racing_pair
    target = tmp_path / "runs.csv"
    result = kdtui("runs", "export", *(r["id"] for r in runs), "--workspace", ws, "--format", "csv", "-o", target,
                   "--all-keys")  # the whole records: every id, hash and config column
    assert result.returncode == 0 and result.stdout == ""
    table = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [row["id"] for row in table] == [r["id"] for r in runs]
    for row, run in zip(table, runs):
        stored = record(ws, run["id"])
        for metric in ("test_agreement", "train_agreement", "test_acc", "test_kl", "teacher_test_acc"):
            assert float(row[metric]) == stored["metrics"][metric]
        assert row["status"] == "done" and row["group_hash"] == stored["group_hash"]
        assert float(row["distill.temperature"]) == stored["spec"]["distill"]["temperature"]


def test_export_markdown_renders(ws, racing_pair):
    ids = [r["id"] for r in racing_pair]
    result = kdtui("runs", "export", *ids, "--workspace", ws, "--format", "md")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 + len(ids)
    assert lines[0].startswith("| id |") and set(lines[1]) <= set("|-")
    for line, run_id in zip(lines[2:], ids):
        assert line.startswith(f"| {run_id.rsplit('-', 1)[1]} |")  # the short id: the two suffixes differ
        assert line.count("|") == lines[0].count("|")
    bad = kdtui("runs", "export", *ids, "--workspace", ws, "--format", "xlsx")
    assert bad.returncode == 2 and "xlsx" in bad.stderr


def test_stores_are_consistent(ws, sweep_runs, racing_pair):
    """After everything above, the registry holds exactly the runs it should, all done."""
    statuses = {r["id"]: r["status"] for r in store(ws).all()}
    for run in sweep_runs + racing_pair:
        assert statuses[run["id"]] == "done"
