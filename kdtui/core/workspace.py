"""Where kdtui keeps things: the workspace folder, its registry file and one folder per run."""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

ENV_VAR = "KDTUI_HOME"
DEFAULT_DIR = "runs"
REGISTRY_NAME = "kdtui.json"
EVENTS_NAME = "events.jsonl"
STOP_FILE = "STOP"  # in a run folder: asks the run (or its waiting worker) to stop


class WorkspaceError(ValueError):
    """The workspace cannot be opened or created as asked; the message is one line for the user."""


def workspace_path(arg: str | Path | None = None) -> Path:
    """Where the workspace is: `arg` (the --workspace option), else $KDTUI_HOME, else ./runs;
    absolute, with `~` and `$VARS` expanded. Touches nothing on disk."""
    if arg is None or str(arg) == "":
        arg = os.environ.get(ENV_VAR) or DEFAULT_DIR
    root = Path(os.path.expandvars(str(arg))).expanduser()
    if not root.is_absolute():
        root = Path.cwd() / root
    return Path(os.path.normpath(root))


def resolve_workspace(arg: str | Path | None = None, *, create: bool = True) -> Path:
    """The workspace folder (see `workspace_path`), checked: with `create`, made if missing and
    writable afterwards (what `kdtui run` and the app need); without, it must already exist and be
    readable, so that a command that only reads never leaves a folder behind. Raises WorkspaceError."""
    root = workspace_path(arg)
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise WorkspaceError(f"workspace {root} is not a folder") from None
        except OSError as exc:
            raise WorkspaceError(f"cannot create workspace {root}: {exc.strerror or exc}") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise WorkspaceError(f"workspace {root} is not writable (a run writes its folder there)")
        return root
    try:
        is_dir = root.is_dir()
    except OSError as exc:  # e.g. a parent folder that this user may not enter
        raise WorkspaceError(f"cannot read workspace {root}: {exc.strerror or exc}") from None
    if not is_dir:
        if root.exists():
            raise WorkspaceError(f"workspace {root} is not a folder")
        raise WorkspaceError(f"no workspace at {root} (nothing has run there yet: `kdtui run SPEC.toml` "
                             f"creates it; another one: --workspace DIR or ${ENV_VAR})")
    if not os.access(root, os.R_OK | os.X_OK):
        raise WorkspaceError(f"cannot read workspace {root}: permission denied")
    return root


# A run id is `YYMMDD-HHMMSS-xxxx` (new_run_id); commands take any prefix of one, or of its random
# suffix `xxxx`. Anything else (a path, `..`, spaces, control characters) is refused before it can
# name a file.
_RUN_ID_PREFIX = re.compile(r"[0-9]{1,6}|[0-9]{6}-[0-9]{0,6}|[0-9]{6}-[0-9]{6}-[0-9a-z]{0,4}|[0-9a-z]{1,4}")


def is_run_id_prefix(text: str) -> bool:
    """Whether `text` is a run id or the start of one (or of its random suffix)."""
    return _RUN_ID_PREFIX.fullmatch(text) is not None


_RUN_ID = re.compile(r"[0-9]{6}-[0-9]{6}-[0-9a-f]{4}")


def is_run_id(text: str) -> bool:
    """Whether `text` is a whole run id (so a folder of that name is a run folder)."""
    return _RUN_ID.fullmatch(text) is not None


class Workspace:
    """One workspace: `kdtui.json` (the registry), `<run id>/` folders, `teachers/`, `reports/`.

    `create=False` opens an existing one only (see `resolve_workspace`)."""

    def __init__(self, root: str | Path | None = None, *, create: bool = True):
        self.root: Path = resolve_workspace(root, create=create)

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
