"""`kdtui run --executor slurm`: options, the sbatch request they make, and runs through submitit's
local executor (`[slurm] cluster = "local"`: each task a real process on this box, started,
followed and cancelled through submitit as on a cluster)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slurm import sbatch_parameters, settle
from kdtui.runs.executors.slurm_jobs import (SlurmOptions, SlurmSettingError, cancel, parse_mem, parse_time,
                                             slurm_options)
from tests.cli_helpers import KDTUI, cli_env, events, fake_run, json_out, kdtui, record, tiny_spec, wait_for, write

pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[test]' brings it)")


def _workspace(tmp_path: Path, settings: str = 'cluster = "local"') -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    write(ws / "settings.toml", f"[slurm]\n{settings}\n")
    return ws


# -- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, minutes", [("90", 90), (90, 90), ("1:30", 2), ("1:30:00", 90), ("0:00:30", 1),
                                           ("2-00", 2880), ("1-02:03", 1563), ("1-00:00:01", 1441)])
def test_time_limits_in_slurm_forms(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "0", "-5", True])
def test_bad_time_limits(text):
    with pytest.raises(SlurmSettingError, match="--time"):
        parse_time(text)


@pytest.mark.parametrize("text, mb", [("16G", 16384), ("16GB", 16384), ("500M", 500), ("500", 500), ("1.5g", 1536),
                                      ("1T", 1048576), ("2048K", 2)])
def test_memory_sizes(text, mb):
    assert parse_mem(text) == mb


def test_command_line_over_settings_over_defaults(tmp_path):
    ws = Workspace(_workspace(tmp_path, 'partition = "gpu"\ngpus_per_run = 1\ntime = "12:00:00"\nmem = "16G"\n'
                                        'array_parallelism = 4'))
    assert slurm_options(ws) == SlurmOptions(partition="gpu", gpus_per_run=1, time_min=720, mem_mb=16384,
                                             array_parallelism=4)
    assert slurm_options(ws, partition="debug", time="30", gpus_per_run=2.0, mem="1G", array_parallelism=1) == \
        SlurmOptions(partition="debug", gpus_per_run=2, time_min=30, mem_mb=1024, array_parallelism=1)
    bare = Workspace(tmp_path / "bare")
    assert slurm_options(bare) == SlurmOptions()


@pytest.mark.parametrize("settings, message", [
    ("gpus_per_run = 1.5", "slurm.gpus_per_run = 1.5: must be a whole number"),
    ("array_parallelism = 0", "slurm.array_parallelism = 0: must be a whole number ≥ 1"),
    ('cluster = "pbs"', "slurm.cluster = 'pbs': one of slurm, local"),
    ('partion = "gpu"', "unknown setting slurm.partion"),
    ('mem = "lots"', "slurm.mem = 'lots': memory such as 16G"),
])
def test_bad_settings_name_the_setting(tmp_path, settings, message):
    ws = Workspace(_workspace(tmp_path, settings))
    with pytest.raises(SlurmSettingError) as caught:
        slurm_options(ws)
    assert message in str(caught.value) and str(ws.root / "settings.toml") in str(caught.value)


def test_the_sbatch_request():
    from submitit.slurm.slurm import _make_sbatch_string  # the script submitit hands to sbatch

    options = SlurmOptions(partition="gpu", gpus_per_run=1, time_min=90, mem_mb=16384, array_parallelism=3)
    script = _make_sbatch_string(command="python -m submitit.core._submit /x", folder="/ws/slurm/%j", map_count=5,
                                 **sbatch_parameters(options))
    lines = set(script.splitlines())
    assert {"#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90", "#SBATCH --mem=16384M",
            "#SBATCH --array=0-4%3", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"} <= lines
    plain = _make_sbatch_string(command="c", folder="/f/%j", **sbatch_parameters(SlurmOptions()))
    assert "#SBATCH --time=60" in plain and not [l for l in plain.splitlines() if "--partition" in l or "--mem" in l]


def test_no_slurm_here_is_one_line_before_anything_is_registered(tmp_path):
    ws = _workspace(tmp_path, 'partition = "gpu"')  # cluster: slurm, and this box has no sbatch
    spec = write(tmp_path / "s.toml", tiny_spec())
    env = {"PATH": "/nonexistent"}
    result = subprocess.run([*KDTUI, "run", str(spec), "--executor", "slurm", "--workspace", str(ws)],
                            capture_output=True, text=True, env=cli_env(**env), timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "no Slurm here (sbatch not found)" in result.stderr
    assert not [p for p in ws.iterdir() if p.name[:2].isdigit()]  # no run folder
    bad = kdtui("run", spec, "--executor", "slurm", "--workspace", ws, "--mem", "lots")
    assert bad.returncode == 2 and "--mem = 'lots'" in bad.stderr
    local = kdtui("run", spec, "--workspace", ws, "--partition", "gpu")
    assert local.returncode == 2 and "go with --executor slurm" in local.stderr


# -- settling a run whose job ended ----------------------------------------------------------------

class _EndedJob:
    """What `settle` asks of a submitit job that has ended: its id and why it has no result."""

    def __init__(self, error: str | None):
        self.job_id, self.error = "77_0", error

    def exception(self):
        if self.error is None:
            return None
        raise RuntimeError(self.error)


def test_settle(tmp_path):
    ws = tmp_path / "ws"
    store = RunStore(Workspace(ws))
    fake_run(ws, "261203-000000-aaaa", "done", metrics={"test_agreement": 0.9})
    fake_run(ws, "261203-000000-bbbb", "queued", pid=None)
    fake_run(ws, "261203-000000-cccc", "queued", pid=None)
    fake_run(ws, "261203-000000-dddd", "running", pid=12345)
    assert settle(store, "261203-000000-aaaa", _EndedJob(None))["status"] == "done"  # its task recorded it
    cancelled = "Job 77_0 (task: 0) with path /x has state CANCELLED"
    assert settle(store, "261203-000000-bbbb", _EndedJob(cancelled))["status"] == "stopped"
    failed = settle(store, "261203-000000-cccc", _EndedJob("Traceback...\nModuleNotFoundError: No module named 'kdtui'"))
    assert failed["status"] == "failed"
    assert failed["error"] == "slurm job 77_0 ended before the run started: ModuleNotFoundError: No module named 'kdtui'"
    assert settle(store, "261203-000000-dddd", _EndedJob("has state NODE_FAIL"))["status"] == "interrupted"
    assert settle(store, "261203-000000-eeee", _EndedJob(None)) == {"id": "261203-000000-eeee", "status": "removed"}


# -- real runs through submitit's local executor --------------------------------------------------

def test_a_two_point_sweep_runs_to_done(tmp_path):
    ws = _workspace(tmp_path)
    spec = write(tmp_path / "sweep.toml", tiny_spec(student_epochs=1, sweep='"distill.temperature" = [1.0, 4.0]'))
    result = kdtui("run", spec, "--executor", "slurm", "--workspace", ws, "--json", "--time", "30")
    assert result.returncode == 0, result.stderr
    runs = json_out(result)
    assert [r["status"] for r in runs] == ["done", "done"]
    assert sorted(r["spec"]["distill"]["temperature"] for r in runs) == [1.0, 4.0]
    for run in runs:
        stored = record(ws, run["id"])
        assert stored["executor"] == "slurm" and stored["slurm_job"].startswith("local:")
        assert stored["pid"] != os.getpid() and stored["environment"]["host"]  # it ran in the job's process
        assert [e["type"] for e in events(ws, run["id"])][-1] == "done"
        assert (ws / run["id"] / "student.pt").exists()
        job = stored["slurm_job"].removeprefix("local:")
        assert (ws / "slurm" / job / f"{job}_0_result.pkl").exists()  # submitit's own record of the task


def _registered(ws: Path, count: int) -> list[str] | None:
    """The ids of the workspace's runs once `count` of them are in the registry."""
    ids = [p.name for p in ws.iterdir() if p.name[:2].isdigit()]
    return ids if len(ids) == count and all(record(ws, i) for i in ids) else None


def _running(ws: Path, run_id: str, phase: str = "student") -> bool:
    """The run has started its `phase` (its first student epoch is recorded)."""
    return any(e.get("phase") == phase and e.get("epoch", 0) >= 1 for e in events(ws, run_id, types=("epoch",)))


def test_stop_cancels_the_job_a_dead_job_reads_interrupted_and_resume_finishes(tmp_path):
    ws = _workspace(tmp_path)
    spec = write(tmp_path / "sweep.toml", tiny_spec(student_epochs=8, sweep="seed = [0, 1]"))
    with open(tmp_path / "run.out", "w") as out, open(tmp_path / "run.err", "w") as err:
        follower = subprocess.Popen([*KDTUI, "run", str(spec), "--executor", "slurm", "--workspace", str(ws), "--json"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=cli_env())
    try:
        ids = wait_for(lambda: _registered(ws, 2))
        stopped_id, killed_id = sorted(ids, key=lambda i: record(ws, i)["spec"]["seed"])
        wait_for(lambda: _running(ws, stopped_id) and _running(ws, killed_id))

        # `runs stop` cancels the job: the run's process gets SIGTERM through submitit and stops cleanly.
        stop = kdtui("runs", "stop", stopped_id, "--workspace", ws)
        job = record(ws, stopped_id)["slurm_job"]
        assert stop.returncode == 0 and f"Slurm job {job} cancelled" in stop.stdout + stop.stderr
        # A job that dies: its process killed outright, no chance to record anything.
        os.kill(record(ws, killed_id)["pid"], signal.SIGKILL)
        assert follower.wait(timeout=300) == 1  # not every run is done
    finally:
        if follower.poll() is None:
            follower.kill()
    assert record(ws, stopped_id)["status"] == "stopped"
    assert [e["type"] for e in events(ws, stopped_id)][-1] == "stopped"
    assert record(ws, killed_id)["status"] == "interrupted"
    # The follower's own account, in the sweep's order (seed 0, seed 1).
    assert [r["status"] for r in json.loads((tmp_path / "run.out").read_text())] == ["stopped", "interrupted"]

    epochs_before = [e["epoch"] for e in events(ws, stopped_id, types=("epoch",)) if e.get("phase") == "student"]
    resumed = kdtui("runs", "resume", stopped_id, "--workspace", ws)
    assert resumed.returncode == 0, resumed.stderr
    assert record(ws, stopped_id)["status"] == "done"
    epochs = [e["epoch"] for e in events(ws, stopped_id, types=("epoch",)) if e.get("phase") == "student"]
    assert epochs[-1] == 8 and epochs[len(epochs_before)] == max(epochs_before) + 1  # continued, not restarted


def test_cancel_alone_stops_a_running_job(tmp_path):
    """No STOP file: the job's cancellation (SIGTERM through submitit's controller) is what stops it."""
    ws = _workspace(tmp_path)
    spec = write(tmp_path / "one.toml", tiny_spec(student_epochs=8))
    with open(tmp_path / "run.out", "w") as out:
        detached = subprocess.run([*KDTUI, "run", str(spec), "--executor", "slurm", "--workspace", str(ws), "--detach"],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=cli_env(),
                                  timeout=120)
    assert detached.returncode == 0, (tmp_path / "run.out").read_text()
    run_id = (tmp_path / "run.out").read_text().split()[0]
    assert "submitted to Slurm as job(s) local:" in (tmp_path / "run.out").read_text()
    wait_for(lambda: _running(ws, run_id))
    assert cancel(record(ws, run_id)) is None
    wait_for(lambda: record(ws, run_id)["status"] not in ("queued", "running"))
    assert record(ws, run_id)["status"] == "stopped"
    assert not (ws / run_id / "STOP").exists()


def test_tail_follows_a_run_on_another_machine_until_its_record_ends(tmp_path):
    """A Slurm run's process lives on a compute node: its pid means nothing here, its record does."""
    from kdtui.core import lifecycle
    from tests.cli_helpers import dead_pid

    ws = tmp_path / "ws"
    run_id = "261203-000000-aaaa"
    fake_run(ws, run_id, "running", host="node-017", pid=dead_pid())
    with open(tmp_path / "tail.out", "w") as out:
        tail = subprocess.Popen([*KDTUI, "runs", "tail", run_id, "--workspace", str(ws)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=cli_env())
    try:
        wait_for(lambda: (tmp_path / "tail.out").read_text().count("\n") >= 3, what="the run's epochs shown")
        assert tail.poll() is None  # still following: a dead pid of another host does not end it
        with (ws / run_id / "events.jsonl").open("a") as events_file:
            events_file.write(json.dumps({"t": 0, "type": "done", "metrics": {"test_agreement": 0.9}}) + "\n")
        lifecycle.done(RunStore(Workspace(ws)), run_id, {"test_agreement": 0.9})
        assert tail.wait(timeout=60) == 0
    finally:
        if tail.poll() is None:
            tail.kill()


def test_stop_settles_a_run_whose_job_died_elsewhere(tmp_path):
    """Detached, nobody follows the job: a task that died on its node leaves the run `running`; `runs
    stop` finds its job over and settles the run as interrupted (resumable). (A live job is cancelled
    instead: test_stop_cancels_the_job_a_dead_job_reads_interrupted_and_resume_finishes.)"""
    from tests.cli_helpers import dead_pid

    ws = tmp_path / "ws"
    run_id = "261203-000000-aaaa"
    fake_run(ws, run_id, "running", host="node-017", pid=4242, executor="slurm", slurm_job=f"local:{dead_pid()}")
    result = kdtui("runs", "stop", run_id, "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert f"{run_id}: its Slurm job local:" in result.stdout and "interrupted" in result.stdout
    assert record(ws, run_id)["status"] == "interrupted"
    assert not (ws / run_id / "STOP").exists()
