"""Where a run's numbers came from: the record's `environment` block, written when a run starts.

`environment(compute)` adds to the torch side (kernels.environment: library versions, device,
numeric settings) what this package knows without torch: the kdtui version, the git commit of the
kdtui checkout when kdtui runs from one (and whether it had uncommitted changes), Python, the
platform and the host. Two runs of one spec that differ can then be told apart in `runs compare`.
"""
from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

GIT_TIMEOUT_S = 5  # a hung network file system must not hold a run's start
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding kdtui/ (a checkout's top)


def environment(compute: dict) -> dict:
    return {"kdtui": _version(), **_checkout(), "python": platform.python_version(),
            "platform": platform.platform(), "host": socket.gethostname(), **compute}


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kdtui")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return None


@lru_cache(maxsize=1)  # the code a process runs is the code it loaded: one look per process
def _checkout() -> dict:
    """{"git_commit", "git_dirty"} when kdtui runs from a git checkout of its own, else {} (an
    installed kdtui inside some other repository's virtual environment is not that repository)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE_ROOT:
        return {}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, **({} if status is None else {"git_dirty": bool(status)})}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):  # no git, or it hangs
        return None
    return done.stdout.strip() if done.returncode == 0 else None
