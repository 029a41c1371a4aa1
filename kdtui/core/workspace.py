"""Where kdtui keeps things: the workspace folder, its registry file and one folder per run."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

ENV_VAR = "KDTUI_HOME"
DEFAULT_DIR = "runs"
REGISTRY_NAME = "kdtui.json"
EVENTS_NAME = "events.jsonl"
STOP_FILE = "STOP"  # in a run folder: asks the run (or its waiting worker) to stop


def resolve_workspace(arg: str | Path | None = None) -> Path:
    """The workspace folder: `arg` (the --workspace option), else $KDTUI_HOME, else ./runs.

    The result is absolute with `~` expanded, and the folder exists afterwards.
    """
    if arg is None or str(arg) == "":
        arg = os.environ.get(ENV_VAR) or DEFAULT_DIR
    root = Path(os.path.expandvars(str(arg))).expanduser()
    if not root.is_absolute():
        root = Path.cwd() / root
    root = Path(os.path.normpath(root))
    root.mkdir(parents=True, exist_ok=True)
    return root


class Workspace:
    """One workspace: `kdtui.json` (the registry), `<run id>/` folders, `teachers/`, `reports/`."""

    def __init__(self, root: str | Path | None = None):
        self.root: Path = resolve_workspace(root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY_NAME

    @property
    def teachers_dir(self) -> Path:
        return self.root / "teachers"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def run_dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id in (".", ".."):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.root / run_id

    def events_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / EVENTS_NAME

    def new_run_id(self) -> str:
        """A short id that sorts by creation time: `YYMMDD-HHMMSS-xxxx` (UTC, 4 random hex digits).

        Not yet claimed: two ids of the same second collide with probability 1/65536, so use
        `claim_run_dir`, which makes the folder and retries on a collision.
        """
        stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime())  # UTC: sorts right across DST changes
        return f"{stamp}-{secrets.token_hex(2)}"

    def claim_run_dir(self) -> tuple[str, Path]:
        """A new run id and its folder, created here: (id, folder). Safe across processes (the
        folder's creation is the claim), however many runs a sweep registers in one second."""
        for _ in range(1000):
            run_id = self.new_run_id()
            try:
                return run_id, self.create_run_dir(run_id)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not find a free run id in {self.root}")

    def create_run_dir(self, run_id: str) -> Path:
        """Create the run's folder; raises FileExistsError if it is already there."""
        path = self.run_dir(run_id)
        path.mkdir(parents=True, exist_ok=False)
        return path
