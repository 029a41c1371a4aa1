"""Process-wide switches and lock libraries (issue: registry hygiene): the garbage collector is
never switched off (two threads could leave it off for the life of the app), and every lock is
filelock's except the queue's slot locks, which a forked run process must inherit."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where a lock must pass to a child process: the worker forks the run, and the slot stays held
# until both are gone (kdtui.runs.executors.slots.HeldSlot). filelock's lock is one object's.
INHERITED_LOCKS = {"kdtui/runs/executors/slots.py"}


def _sources(*folders: str) -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
            for folder in folders for p in sorted((REPO / folder).rglob("*.py"))}


def test_nothing_switches_the_garbage_collector():
    pattern = re.compile(r"\bgc\.(disable|enable|freeze|set_threshold)\(")
    assert [path for path, text in _sources("kdtui", "kernels").items() if pattern.search(text)] == []


def test_locks_are_filelocks_except_where_a_child_inherits_one():
    pattern = re.compile(r"\bfcntl\.(flock|lockf)\b|\bimport portalocker\b|\bimport fasteners\b")
    users = {path for path, text in _sources("kdtui").items() if pattern.search(text)}
    assert users == INHERITED_LOCKS


def test_the_line_lock_serialises_two_holders(tmp_path):
    """The queue's line lock (filelock now): a second holder waits for the first."""
    import threading
    import time

    from kdtui.core.workspace import Workspace
    from kdtui.runs.executors.slots import RunQueue

    queue = RunQueue(Workspace(tmp_path / "ws"))
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with queue.locked():
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    with queue.locked():
        order.append("second in")
    thread.join()
    assert order == ["first out", "second in"]
