"""A crash of the app is never silent: `kdtui` (the app) exits non-zero, prints one line naming a
crash file in the workspace that holds the whole traceback, and leaves the runs running.

The fault is injected into the real entry point (`kdtui.cli.main`, in a subprocess): the app's
handler of its first registry read raises. The app runs headless there (no terminal in a test).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kdtui.core.procs import pid_alive
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace

pytest.importorskip("textual")

REPO = Path(__file__).resolve().parents[1]
FAULT = "injected fault [bold]x"
LAUNCH = textwrap.dedent(f"""
    import sys
    from textual.app import App
    from kdtui.tui.app import KdtuiApp

    _run = App.run

    def headless_run(self, **options):
        return _run(self, headless=True, size=(80, 24), **options)

    def fault(self, message):
        raise RuntimeError({FAULT!r})

    App.run = headless_run
    KdtuiApp.on_runs_loaded = fault
    from kdtui.cli import main

    sys.argv = ["kdtui", "--workspace", sys.argv[1]]
    main()
""")


@pytest.fixture
def running_run(tmp_path):
    """A workspace whose one run is running: a process of its own session, as detached runs are."""
    ws = tmp_path / "ws"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    RunStore(Workspace(ws)).add({"id": "260101-000000-0a9e", "name": "[@click=app.quit]x", "status": "running",
                                 "host": socket.gethostname(), "pid": process.pid, "started": time.time(),
                                 "created": time.time(), "spec": {"student": {"epochs": 2}}})
    yield ws, process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_crash_exits_non_zero_names_its_file_and_leaves_runs_running(running_run):
    ws, process = running_run
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", LAUNCH, str(ws)], capture_output=True, text=True,
                            timeout=120, env=env, cwd=str(REPO))

    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    crashes = sorted((ws / "crashes").glob("*.txt"))
    assert len(crashes) == 1
    assert lines[0] == (f"kdtui: the app stopped on an error (RuntimeError: {FAULT}); the traceback is in "
                        f"{crashes[0]} (runs keep going)")
    report = crashes[0].read_text()
    assert "Traceback (most recent call last)" in report
    assert f"RuntimeError: {FAULT}" in report
    assert "in fault" in report  # the whole traceback, down to the frame that raised

    # The run goes on: its process lives, its record still says running.
    assert process.poll() is None and pid_alive(process.pid)
    assert RunStore(Workspace(ws)).get("260101-000000-0a9e")["status"] == "running"


def test_the_crash_file_keeps_every_error(tmp_path):
    from kdtui.tui.crash import write_crash

    errors, path = [], None
    for text in ("first", "second"):  # a second error rewrites the same file, both tracebacks in it
        try:
            raise ValueError(text)
        except ValueError as exc:
            errors.append(exc)
        path = write_crash(tmp_path, errors, path)
    report = path.read_text()
    assert path.parent == tmp_path / "crashes"
    assert report.index("ValueError: first") < report.index("ValueError: second")
    assert report.count("Traceback (most recent call last)") == 2
