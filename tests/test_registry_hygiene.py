"""Process-wide switches and lock libraries (issue: registry hygiene): the garbage collector is
never switched off (two threads could leave it off for the life of the app), and every lock is
filelock's except the queue's slot locks, which a forked run process must inherit."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

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
    users = {path for path, text in _sources("kdtui", "kernels").items() if pattern.search(text)}
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


def test_the_teacher_cache_lock_serialises_holders_and_refuses_a_link(tmp_path):
    """The teacher cache's file lock (filelock now): a second holder waits; a link planted at the
    lock's path is an OSError (the cache then runs without its file), never followed."""
    import threading
    import time

    from kernels.teacher_cache import CacheFile

    first_file, second_file = CacheFile(tmp_path, "k", secret=b"s" * 32), CacheFile(tmp_path, "k", secret=b"s" * 32)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with first_file.locked():
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    with second_file.locked():
        order.append("second in")
    thread.join()
    assert order == ["first out", "second in"]

    target = tmp_path / "elsewhere"
    target.write_text("keep")
    linked = CacheFile(tmp_path, "other", secret=b"s" * 32)
    linked.path.with_name(linked.path.name + ".lock").symlink_to(target)
    with pytest.raises(OSError):
        with linked.locked():
            pass
    assert target.read_text() == "keep"
