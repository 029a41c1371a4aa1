"""Shared helpers for the CLI tests: run the real `kdtui` console script, write tiny specs, poll.

Every test here drives real processes (the installed `kdtui` script, detached workers), real TinyDB
files and the embedded digits data. Nothing sleeps as synchronisation: `wait_for` polls a condition
with a generous timeout (the test machine is shared and often busy).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from kdtui.core.eventlog import read_all
from kdtui.core.registry import RunStore
from kdtui.core.workspace import is_run_id_prefix

_SCRIPT = Path(sys.executable).with_name("kdtui")
KDTUI = [str(_SCRIPT)] if _SCRIPT.exists() else ([shutil.which("kdtui")] if shutil.which("kdtui")
                                                  else [sys.executable, "-m", "kdtui.cli"])
TIMEOUT_S = 300          # one CLI command, a whole (tiny) run included
POLL_TIMEOUT_S = 180     # a condition on a background run


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KDTUI_HOME", "FORCE_COLOR")}
    # One thread per run: on a 2-core machine shared by several runs this is both the fastest and
    # the same arithmetic in every process (the stop/resume test compares results exactly).
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", NO_COLOR="1",
               PYTHONUNBUFFERED="1", **extra)
    return env


def kdtui(*args: str | os.PathLike, timeout: float = TIMEOUT_S, cwd: str | os.PathLike | None = None,
          env_extra: dict | None = None, **popen) -> subprocess.CompletedProcess:
    """Run `kdtui ARGS...` to completion; stdin is /dev/null (not a terminal), output captured.
    `env_extra` adds environment variables (the environment is otherwise `cli_env()`)."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([*KDTUI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**(env_extra or {})), cwd=cwd, **popen)


def start_kdtui(*args: str | os.PathLike, log_dir: Path, name: str, ctrl_c: bool = True) -> subprocess.Popen:
    """Start `kdtui ARGS...` without waiting; output goes to files (a pipe nobody reads could block).

    The process gets SIGINT at its default, as a terminal's foreground job does, even when this test
    run was itself started with SIGINT ignored (a CI script's `cmd &`): an ignored signal stays ignored
    across exec, a caught one is reset to its default. `ctrl_c=False` starts it with SIGINT ignored."""
    out = open(log_dir / f"{name}.out", "w")
    err = open(log_dir / f"{name}.err", "w")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler if ctrl_c else signal.SIG_IGN)
    try:
        return subprocess.Popen([*KDTUI, *map(str, args)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                text=True, env=cli_env())
    finally:
        signal.signal(signal.SIGINT, previous)
        out.close()
        err.close()


def json_out(result: subprocess.CompletedProcess):
    """stdout parsed as one JSON document (fails if anything else was printed there)."""
    assert result.stdout.strip(), f"no stdout; stderr: {result.stderr}"
    return json.loads(result.stdout)


def tiny_spec(name: str = "tiny", *, seed: int = 0, teacher_epochs: int = 1, student_epochs: int = 2,
              student_batch: int = 128, student_lr: float = 0.05, extra: str = "", sweep: str = "", **sections: str) -> str:
    """A digits spec that trains in seconds on one CPU thread. `sections` add lines to a section,
    e.g. student='momentum = 0.0'."""
    text = f"""name = "{name}"
seed = {seed}
device = "cpu"
{extra}
[data]
dataset = "digits"
{sections.get('data', '')}
[teacher]
epochs = {teacher_epochs}
batch_size = 128
lr = 0.1
{sections.get('teacher', '')}
[student]
epochs = {student_epochs}
batch_size = {student_batch}
lr = {student_lr!r}
{sections.get('student', '')}
[distill]
{sections.get('distill', '')}
"""
    if sweep:
        text += f"\n[sweep]\n{sweep}\n"
    return text


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def wait_for(condition: Callable[[], object], timeout: float = POLL_TIMEOUT_S, interval: float = 0.05,
             what: str = "condition"):
    """Poll `condition` until it returns something truthy; return that. Fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def store(ws: Path) -> RunStore:
    return RunStore(ws)


def record(ws: Path, run_id: str) -> dict | None:
    return store(ws).get(run_id)


def events(ws: Path, run_id: str, types=None) -> list[dict]:
    """The run's events as the dicts of their lines (the tests read fields by name)."""
    return [event.to_dict() for event in read_all(Path(ws) / run_id / "events.jsonl", types=types)]


def student_epochs_seen(ws: Path, run_id: str) -> list[int]:
    return [e["epoch"] for e in events(ws, run_id, types=("epoch",)) if e.get("phase") == "student"]


def run_folders(ws: Path) -> list[str]:
    """Run folders in a workspace (named by a run id: not the teacher store, reports or the registry)."""
    if not Path(ws).exists():
        return []
    return sorted(p.name for p in Path(ws).iterdir() if p.is_dir() and is_run_id_prefix(p.name))


def fake_run(ws: Path, run_id: str, status: str = "done", **fields) -> dict:
    """A registry record plus its folder and a small events.jsonl, shaped like a finished run."""
    folder = ws / run_id
    folder.mkdir(parents=True)
    metrics = {"train_agreement": 0.9, "test_agreement": 0.85, "test_acc": 0.8, "test_kl": 0.1, "epoch": 2}
    lines = [{"t": time.time(), "type": "epoch", "phase": "student", "index": 0, "epoch": e,
              "metrics": {k: v - 0.1 * (2 - e) for k, v in metrics.items() if k != "epoch"}} for e in (0, 1, 2)]
    (folder / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    doc = {"id": run_id, "name": f"fake-{run_id[-4:]}", "status": status, "spec": {"seed": 0},
           "spec_hash": "s" * 64, "group_hash": "g" * 64, "metrics": metrics if status == "done" else {},
           "host": socket.gethostname(), "pid": None, "created": time.time(), **fields}
    RunStore(ws).add(doc)
    return doc


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
