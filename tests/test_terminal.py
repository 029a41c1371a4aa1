"""The app in a real terminal: tmux runs the installed `kdtui` (100×30, and 80×24), keys go in with
`send-keys`, and the screen comes back with `capture-pane`, exactly what a researcher over SSH sees.

.ci/run installs tmux where it is missing; without it these tests fail (they are not skipped).
"""
from __future__ import annotations

import time

from kdtui.core.procs import pid_alive
from tests.cli_helpers import KDTUI, json_out, kdtui, record, tiny_spec, wait_for, write
from tests.tmux import Tmux, app_env

def test_keyboard_only_session_in_100x30(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "tiny.toml", tiny_spec("terminal-tiny", student_epochs=1,
                                                   data="teacher_subset = 200"))
    done = json_out(kdtui("run", spec, "--json", "--workspace", ws))
    term = Tmux(tmp_path, [*KDTUI, "--workspace", str(ws), "--no-mouse"], app_env(ws), size=(100, 30))
    try:
        screen = term.wait_screen("terminal-tiny", done["id"].rsplit("-", 1)[1], "done")  # the id's suffix
        assert max(len(line) for line in screen.splitlines()) <= 100

        term.keys("?")  # help lists the runs screen's keys
        term.wait_screen("Keys: runs screen", "Compare", "Quit")
        term.keys("Escape")
        wait_for(lambda: "Keys: runs screen" not in term.screen(), timeout=30, what="help closed")

        term.keys("Enter")  # the run's live view: curves and the per-epoch table
        term.wait_screen("agreement (train agr, test agr)", "test acc", "student")
        term.keys("Escape")
        term.wait_screen("terminal-tiny", "1 run · ")

        term.keys("q")
        wait_for(lambda: not term.alive(), timeout=30, what="the app to quit on q")
    finally:
        term.close()


def test_quitting_the_app_leaves_a_detached_run_going(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "long.toml", tiny_spec("terminal-long", student_epochs=200, student_batch=32))
    result = kdtui("run", spec, "--detach", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[0]
    term = Tmux(tmp_path, [*KDTUI, "--workspace", str(ws), "--no-mouse"], app_env(ws), size=(80, 24))
    try:
        wait_for(lambda: (record(ws, run_id) or {}).get("status") == "running", what="the run to start")
        term.wait_screen(run_id.rsplit("-", 1)[1], "running")
        term.keys("C-c")  # Ctrl-C quits the app, and only the app
        wait_for(lambda: not term.alive(), timeout=30, what="the app to quit on Ctrl-C")
        time.sleep(1.0)  # give a wrongly propagated signal the time to land before looking
        current = record(ws, run_id)
        assert current["status"] == "running" and pid_alive(current["pid"]), current
    finally:
        term.close()
        stop = kdtui("runs", "stop", run_id, "--workspace", ws)
        assert stop.returncode == 0, stop.stderr
        wait_for(lambda: (record(ws, run_id) or {}).get("status") == "stopped", what="the run to stop")
