"""What the app remembers between starts, in the workspace's settings.toml under `[app]` (the file
`[queue]` and `[slurm]` settings live in, kdtui.runs.executors.slots.SETTINGS_NAME): today the runs
screen's sort. Reading never fails the app (a bad file or value is the default); writing keeps every
other table and key of the file and goes through the one atomic write (kdtui.core.files). These read
and write a file: call them from a worker thread.
"""
from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w

from kdtui.core.files import atomic_write
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import SETTINGS_NAME

SECTION = "app"


class SettingsUnreadable(ValueError):
    """settings.toml exists but is not TOML: it is the user's file, so it is left as it is."""


def _read(workspace: Workspace) -> dict:
    path = workspace.root / SETTINGS_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsUnreadable(f"{path}: not a valid settings file ({exc})".splitlines()[0]) from None


def read_sort(workspace: Workspace, keys: tuple[str, ...]) -> tuple[str | None, bool]:
    """The runs screen's saved sort: (column key or None for newest first, reversed)."""
    try:
        app = _read(workspace).get(SECTION)
    except (OSError, UnicodeDecodeError, SettingsUnreadable):
        return None, False
    if not isinstance(app, dict):
        return None, False
    key, reverse = app.get("runs_sort"), app.get("runs_sort_reverse", False)
    if key not in keys:  # "" (newest first), a column since removed, a hand-typed slip
        return None, False
    return key, reverse is True


def write_sort(workspace: Workspace, key: str | None, reverse: bool) -> None:
    """Save the runs screen's sort; raises OSError or SettingsUnreadable (the file is not touched)."""
    data = _read(workspace)
    app = data.get(SECTION) if isinstance(data.get(SECTION), dict) else {}
    data[SECTION] = {**app, "runs_sort": key or "", "runs_sort_reverse": bool(reverse)}
    workspace.root.mkdir(parents=True, exist_ok=True)
    atomic_write(workspace.root / SETTINGS_NAME, tomli_w.dumps(data))
