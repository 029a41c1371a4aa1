"""The only way kdtui replaces a file, and where a command may write one a user names.

The atomic write itself (temporary file, fsync, rename; never over anything but a regular file) is
`kernels.atomic`, shared with the engine's checkpoints so that there is one implementation; it is
re-exported here for the app. `check_output` adds what only the app knows: a workspace's own files
(its registry, index shards, run folders and teacher store) are never a place to write an export.
"""
from __future__ import annotations

from pathlib import Path

from kdtui.core.workspace import REGISTRY_NAME, is_run_id
from kernels.atomic import (
    TEMP_SUFFIX,
    NotARegularFile,
    atomic_output,
    atomic_write,
    atomic_write_many,
    check_replaceable,
    fsync_dir,
    temp_prefix,
)

__all__ = ["TEMP_SUFFIX", "NotARegularFile", "OutputRefused", "atomic_output", "atomic_write", "atomic_write_many",
           "check_output", "check_replaceable", "fsync_dir", "temp_prefix", "workspace_owner"]

# Folders of a workspace that hold its own files (kdtui.core.registry.INDEX_DIR, Workspace.teachers_dir).
_OWN_FOLDERS = ("kdtui.index", "teachers")


class OutputRefused(ValueError):
    """A path a user named to write to is not one kdtui may write; the message is one line."""


def workspace_owner(path: str | Path) -> Path | None:
    """The workspace whose own file `path` is (or would be), or None: the registry and its lock,
    anything in its index folder, teacher store or a run folder. Links are resolved first, so a link
    into a workspace counts as what it points to. Reports and other files a user keeps in a
    workspace folder are not its own."""
    target = Path(path).resolve()
    for folder in target.parents:
        if (folder / REGISTRY_NAME).is_file():
            inside = target.relative_to(folder).parts
            if len(inside) == 1:
                return folder if inside[0].startswith(REGISTRY_NAME) else None
            return folder if inside[0] in _OWN_FOLDERS or is_run_id(inside[0]) else None
    return None


def check_output(path: str | Path) -> None:
    """Raise OutputRefused unless `path` may receive a file a user asked for (an export, a report):
    absent or a regular file, and not a workspace's own file."""
    path = Path(path)
    try:
        check_replaceable(path)
    except NotARegularFile as exc:
        raise OutputRefused(f"cannot write {path}: {exc.strerror}") from None
    owner = workspace_owner(path)
    if owner is not None:
        raise OutputRefused(f"cannot write {path}: it is a file of the workspace {owner}, which kdtui keeps itself")
