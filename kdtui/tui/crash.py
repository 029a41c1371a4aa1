"""When the app meets an error it did not expect: the whole traceback goes to a file kept in the
workspace (`<workspace>/crashes/<time>-<pid>.txt`), the terminal gets one line naming it, and the
exit status is non-zero. Runs are processes of their own (their own session): they keep going.
"""
from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path

from kdtui.core.files import atomic_write
from kdtui.core.names import printable

CRASH_DIR = "crashes"


def crash_report(errors: list[BaseException], when: float) -> str:
    """The file's text: when, which versions, then each error's whole traceback, first one first."""
    from importlib.metadata import PackageNotFoundError, version

    def version_of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "?"

    head = [f"kdtui app crash, {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(when))}",
            f"kdtui {version_of('kdtui')}, textual {version_of('textual')}, python {platform.python_version()}, "
            f"{sys.platform}, pid {os.getpid()}", ""]
    body = ["".join(traceback.format_exception(type(e), e, e.__traceback__)) for e in errors]
    return "\n".join(head) + "\n".join(body)


def write_crash(root: Path, errors: list[BaseException], path: Path | None = None) -> Path:
    """Write (or rewrite, with a later error added) the crash file under the workspace `root`."""
    when = time.time()
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
        path = root / CRASH_DIR / f"{stamp}-{os.getpid()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, crash_report(errors, when))
    return path


def crash_line(error: BaseException, path: Path) -> str:
    """The one line the terminal gets."""
    what = " ".join(printable(f"{type(error).__name__}: {error}").split())
    if len(what) > 200:
        what = what[:199] + "…"
    return f"kdtui: the app stopped on an error ({what}); the traceback is in {path} (runs keep going)"
