"""A real terminal for the app tests: tmux on a private socket, driven by send-keys, read by capture-pane."""
from __future__ import annotations

import shutil
import subprocess
import uuid

from tests.cli_helpers import cli_env, wait_for


class Tmux:
    """One detached tmux session on a private socket (never the user's own tmux server)."""

    def __init__(self, tmp_path, command: list[str], env: dict, size: tuple[int, int] = (100, 30)):
        assert shutil.which("tmux"), "tmux is needed for the real-terminal tests (.ci/run installs it)"
        self.socket = str(tmp_path / "tmux.sock")
        self.name = f"kdtui-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        # COLUMNS / LINES (pytest's environment may have them) would override the pane's real size.
        line = f"env -u COLUMNS -u LINES {exports} " + " ".join(_quote(part) for part in command)
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]), line)

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


def app_env(ws) -> dict:
    """The environment of the app in tmux: a 256-colour terminal, the workspace, and little else."""
    env = {k: v for k, v in cli_env().items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "OMP_NUM_THREADS")}
    env.update(TERM="xterm-256color", KDTUI_HOME=str(ws))
    return env
