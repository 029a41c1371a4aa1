"""The kdtui terminal app (Textual). `run_app` is what `kdtui` with no arguments starts.

Importing this package is cheap: the app itself is imported when `run_app` is called.
"""
from __future__ import annotations


def run_app(workspace: str | None = None, mouse: bool = True) -> int:
    """Start the terminal app on `workspace` (--workspace, else $KDTUI_HOME, else ./runs) and return
    its exit status (non-zero after a crash: one line names the crash file in the workspace).
    `mouse=False` is `kdtui --no-mouse`. Runs launched from the app keep going after it quits."""
    from kdtui.tui.app import run_app as _run

    return _run(workspace, mouse=mouse)


__all__ = ["run_app"]
