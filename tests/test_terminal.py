"""The app in a real terminal: tmux runs the installed `kdtui` at 80×24, keys go in with `send-keys`,
and the screen comes back with `capture-pane`, exactly what a researcher over SSH sees.

.ci/run installs tmux where it is missing; without it these tests fail (they are not skipped).
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid

from kdtui.registry import pid_alive
from tests.cli_helpers import KDTUI, cli_env, json_out, kdtui, record, tiny_spec, wait_for, write

COLUMNS, LINES = 80, 24


class Tmux:
    """One detached tmux session on a private socket (never the user's own tmux server)."""

    def __init__(self, tmp_path, command: list[str], env: dict):
        assert shutil.which("tmux"), "tmux is needed for the real-terminal tests (.ci/run installs it)"
        self.socket = str(tmp_path / "tmux.sock")
        self.name = f"kdtui-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        line = f"env {exports} " + " ".join(_quote(part) for part in command)
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(COLUMNS), "-y", str(LINES), line)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=30)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name).stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", self.name).returncode == 0

    def wait_screen(self, *texts: str, timeout: float = 60) -> str:
        return wait_for(lambda: (lambda s: s if all(t in s for t in texts) else None)(self.screen()),
                        timeout=timeout, interval=0.2, what=f"{texts} on screen:\n{self.screen()}")

    def close(self) -> None:
        self._tmux("kill-server")


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "'\\''") + "'"


def _app_env(ws) -> dict:
    env = {k: v for k, v in cli_env().items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "OMP_NUM_THREADS")}
    env.update(TERM="xterm-256color", KDTUI_HOME=str(ws))
    return env


def test_keyboard_only_session_in_80x24(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "tiny.toml", tiny_spec("terminal-tiny", student_epochs=1,
                                                   data="teacher_subset = 200"))
    done = json_out(kdtui("run", spec, "--json", "--workspace", ws))
    term = Tmux(tmp_path, [*KDTUI, "--workspace", str(ws), "--no-mouse"], _app_env(ws))
    try:
        screen = term.wait_screen("terminal-tiny", done["id"], "done")
        assert len(screen.splitlines()[0]) <= COLUMNS

        term.keys("?")  # help lists the runs screen's keys
        term.wait_screen("Keys: runs screen", "Compare", "Quit")
        term.keys("Escape")
        wait_for(lambda: "Keys: runs screen" not in term.screen(), timeout=30, what="help closed")

        term.keys("Enter")  # the run's live view: curves and the per-epoch table
        term.wait_screen("agreement (train, test)", "test accuracy", "student")
        term.keys("Escape")
        term.wait_screen("terminal-tiny", "1 runs")

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
    term = Tmux(tmp_path, [*KDTUI, "--workspace", str(ws), "--no-mouse"], _app_env(ws))
    try:
        wait_for(lambda: (record(ws, run_id) or {}).get("status") == "running", what="the run to start")
        term.wait_screen(run_id, "running")
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
