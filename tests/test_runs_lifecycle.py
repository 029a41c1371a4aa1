"""A run's life through the CLI: detached in the background, stopped and resumed (to the same result as
an uninterrupted run), interrupted with Ctrl-C, failed by a NaN loss or by a missing data set.

The module shares one workspace; `uninterrupted` is the detached run that the stop/resume test
compares against. Waiting is always polling for a condition (registry status, events file), never
a fixed sleep.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from cli_helpers import (events, json_out, kdtui, record, start_kdtui, student_epochs_seen, tiny_spec,
                         wait_for, write)
from kdtui.core.lifecycle import reconcile
from kdtui.core.registry import RunStore

FINAL = ("done", "failed", "stopped", "interrupted")
# Long enough (8 student epochs of 45 steps) that a stop requested after epoch 1 lands mid-run.
LONG_EPOCHS = 8


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle") / "ws"


@pytest.fixture(scope="module")
def long_spec(tmp_path_factory):
    return write(tmp_path_factory.mktemp("specs") / "long.toml",
                 tiny_spec("long", student_epochs=LONG_EPOCHS, student_batch=32))


def settled(ws, run_id: str) -> dict | None:
    """The record once it reached a final status (after settling a dead worker's run, as `kdtui runs
    list` does)."""
    store = RunStore(ws)
    reconcile(store)
    current = store.get(run_id)
    return current if current and current["status"] in FINAL else None


def started(ws, run_id: str) -> dict | None:
    """The record once the run's own process has started it (then `pid` is that process)."""
    current = record(ws, run_id)
    return current if current and current["status"] != "queued" else None


@pytest.fixture(scope="module")
def uninterrupted(ws, long_spec):
    """`kdtui run --detach`: how long the CLI took, the record right after it returned, the final one."""
    began = time.monotonic()
    result = kdtui("run", long_spec, "--workspace", ws, "--detach", "--json")
    cli_seconds = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    [printed] = json_out(result)
    at_return = record(ws, printed["id"])
    # A run waiting in the line has no process of its own; once a worker takes it, its pid is the
    # run's process, which leads its own session (a closed terminal's SIGHUP never reaches it).
    taken = wait_for(lambda: started(ws, printed["id"]), what=f"run {printed['id']} to start")
    pid = taken["pid"]
    try:
        own_session = os.getsid(pid) == pid
    except ProcessLookupError:
        own_session = None                       # already gone: nothing to check
    final = wait_for(lambda: settled(ws, printed["id"]), what=f"run {printed['id']} to finish")
    return {"cli_seconds": cli_seconds, "printed": printed, "at_return": at_return, "final": final,
            "own_session": own_session, "run_pid": pid, "stderr": result.stderr}


# -- detach ------------------------------------------------------------------------------------------

def test_detach_returns_at_once_and_the_run_finishes_on_its_own(ws, uninterrupted):
    final, at_return = uninterrupted["final"], uninterrupted["at_return"]
    assert final["status"] == "done", final.get("error")
    # When the CLI returned, the run had not finished (nor, usually, started training).
    assert at_return["status"] in ("queued", "running")
    run_seconds = final["finished"] - final["started"]
    assert uninterrupted["cli_seconds"] < run_seconds, (uninterrupted["cli_seconds"], run_seconds)
    assert uninterrupted["own_session"] in (True, None)
    assert final["pid"] == uninterrupted["run_pid"] != os.getpid()
    assert "started in the background" in uninterrupted["stderr"]
    assert final["metrics"]["epoch"] == LONG_EPOCHS
    assert student_epochs_seen(ws, final["id"]) == list(range(LONG_EPOCHS + 1))
    assert (ws / final["id"] / "worker.log").is_file()


# -- stop and resume ---------------------------------------------------------------------------------

def test_stop_then_resume_matches_the_uninterrupted_run(ws, long_spec, uninterrupted):
    reference = uninterrupted["final"]
    assert reference["status"] == "done"
    result = kdtui("run", long_spec, "--workspace", ws, "--detach")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    wait_for(lambda: any(epoch >= 1 for epoch in student_epochs_seen(ws, run_id)),
             what="the first student epoch")
    stop = kdtui("runs", "stop", run_id, "--workspace", ws)
    assert stop.returncode == 0 and "stop requested" in stop.stdout, stop.stdout + stop.stderr
    stopped = wait_for(lambda: settled(ws, run_id), what="the run to stop")
    assert stopped["status"] == "stopped"
    epochs_before = student_epochs_seen(ws, run_id)
    assert max(epochs_before) < LONG_EPOCHS, "the run finished before the stop landed"
    assert events(ws, run_id, types=("stopped",))

    resumed = kdtui("runs", "resume", run_id[:15], "--workspace", ws, "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json_out(resumed)
    assert final["status"] == "done"
    assert final["metrics"] == reference["metrics"]
    shown = json_out(kdtui("runs", "show", run_id, "--workspace", ws, "--json"))
    reference_shown = json_out(kdtui("runs", "show", reference["id"], "--workspace", ws, "--json"))
    assert shown["history"] == reference_shown["history"]
    assert shown["teachers"][0]["reused"] is True
    # The resume continued from the checkpoint: epochs already done were not trained again.
    epoch_events = [e["epoch"] for e in events(ws, run_id, types=("epoch",)) if e["phase"] == "student"]
    assert len(epoch_events) == LONG_EPOCHS + 1
    assert not (ws / run_id / "STOP").exists()


def test_resume_refuses_a_finished_run(ws, uninterrupted):
    result = kdtui("runs", "resume", uninterrupted["final"]["id"], "--workspace", ws)
    assert result.returncode == 2 and "is done" in result.stderr
    stop = kdtui("runs", "stop", uninterrupted["final"]["id"], "--workspace", ws)
    assert stop.returncode == 0 and "already done" in stop.stdout


# -- Ctrl-C ------------------------------------------------------------------------------------------

def new_run_id(ws, known: set[str]) -> str | None:
    ids = [r["id"] for r in RunStore(ws).all() if r["id"] not in known]
    return ids[0] if ids else None


def test_ctrl_c_in_the_foreground_stops_with_130(ws, long_spec, uninterrupted, tmp_path):
    known = {r["id"] for r in RunStore(ws).all()}
    proc = start_kdtui("run", long_spec, "--workspace", ws, log_dir=tmp_path, name="fg")
    try:
        run_id = wait_for(lambda: new_run_id(ws, known), what="the run to be registered")
        wait_for(lambda: student_epochs_seen(ws, run_id), what="the student phase")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert record(ws, run_id)["status"] == "stopped"
    assert "Traceback" not in (tmp_path / "fg.err").read_text()
    assert max(student_epochs_seen(ws, run_id)) < LONG_EPOCHS


@pytest.mark.parametrize("ctrl_c", [True, False], ids=["sigint-live", "sigint-ignored"])
def test_ctrl_c_while_starting_up_still_stops_the_run(ws, long_spec, uninterrupted, tmp_path, ctrl_c):
    """SIGINT while the process still imports torch (before the run catches signals), whether it was
    started with SIGINT live (a terminal) or ignored (a script's `kdtui run SPEC &`, or CI's shell)."""
    known = {r["id"] for r in RunStore(ws).all()}
    proc = start_kdtui("run", long_spec, "--workspace", ws, log_dir=tmp_path, name="early", ctrl_c=ctrl_c)
    try:
        run_id = wait_for(lambda: new_run_id(ws, known), interval=0.01, what="the run to be registered")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert RunStore(ws).get(run_id)["status"] == "stopped"   # not left queued forever
    assert "Traceback" not in (tmp_path / "early.err").read_text()


# -- failures ----------------------------------------------------------------------------------------

def test_nan_loss_fails_naming_epoch_and_step(ws, tmp_path, uninterrupted):
    spec = write(tmp_path / "nan.toml", tiny_spec("nan", student_epochs=2, student_lr=1e30, student="momentum = 0.0"))
    result = kdtui("run", spec, "--workspace", ws)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    failed = [r for r in RunStore(ws).all() if r["name"] == "nan"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    error = failed[0]["error"]
    assert "non-finite loss in student epoch 1, step " in error and "lower lr" in error
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: run {failed[0]['id']} failed: {error}"]
    assert "Traceback" not in result.stderr + result.stdout
    [event] = events(ws, failed[0]["id"], types=("failed",))
    assert (event["phase"], event["epoch"]) == ("student", 1) and event["step"] >= 1


def test_missing_dataset_fails_naming_the_folder(ws, tmp_path):
    root = tmp_path / "no-data-here"
    root.mkdir()
    spec = write(tmp_path / "cifar.toml",
                 f'name = "nodata"\ndevice = "cpu"\n[data]\ndataset = "cifar10"\ndownload = false\nroot = "{root}"\n')
    result = kdtui("run", spec, "--workspace", ws, "--json")
    assert result.returncode == 1
    final = json_out(result)                      # --json: the failed record, still JSON only
    assert final["status"] == "failed"
    assert str(root) in final["error"] and "download = true" in final["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(root) in errors[0]
    assert "Traceback" not in result.stderr
    assert list(root.iterdir()) == []             # download = false: nothing fetched or written
