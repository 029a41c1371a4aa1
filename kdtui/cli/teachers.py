"""`kdtui teachers ...`: what the teacher store holds, and pruning it."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from kdtui.cli.common import (JsonOption, WorkspaceOption, fail, noun, open_store, plain_table, print_json,
                              show_help_without_command)

_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not match:
        raise fail(f"--older-than {text!r}: expected a number and a unit, e.g. 30d, 12h, 90m")
    return float(match[1]) * _DURATION[match[2]]


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise fail(f"--max-size {text!r}: expected a number of bytes with an optional unit, e.g. 50G, 500M")
    return int(float(match[1]) * _SIZE[match[2]])


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"


def _entries(workspace: Path | None):
    from kdtui.core.teachers import TeacherStore

    ws, store = open_store(workspace)
    records = store.all(details=True)
    return TeacherStore(ws.teachers_dir), records


def _row(entry) -> dict:
    return {"key": entry.key, "spec": entry.summary, "bytes": entry.bytes, "last_used": entry.last_used,
            "runs": entry.runs}


# kdtui.core.teachers (which loads the spec model, pydantic) is imported inside the commands: `kdtui
# --help` imports this module to list it.
app = noun(name="teachers", help="The teacher store: trained teachers and their output caches, shared by every run.",
           invoke_without_command=True, callback=show_help_without_command)


@app.command("list")
def teachers_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Each stored teacher: key, what it is, size on disk (checkpoint and caches), last use, runs."""
    from kdtui.core.teachers import human_size

    store, records = _entries(workspace)
    entries, now = store.entries(records), time.time()
    if as_json:
        print_json({"teachers": [_row(e) for e in entries], "total_bytes": sum(e.bytes for e in entries)})
        return
    rows = [[e.key[:12], e.summary, human_size(e.bytes), _age(now - e.last_used),
             f"{len(e.runs)}: {' '.join(r[:8] for r in e.runs[:3])}{' ...' if len(e.runs) > 3 else ''}"
             if e.runs else "0"] for e in entries]
    if rows:
        sys.stdout.write(plain_table([("key", "<"), ("teacher", "<"), ("size", ">"), ("used", ">"), ("runs", "<")],
                                     rows, squeeze=1))
    sys.stdout.write(f"{len(entries)} teacher(s), {human_size(sum(e.bytes for e in entries))} in {store.root}\n")


@app.command("prune")
def teachers_prune(
    workspace: WorkspaceOption = None,
    older_than: Annotated[Optional[str], typer.Option(
        "--older-than", metavar="AGE", help="Remove teachers unused for longer than AGE (e.g. 30d, 12h).")] = None,
    max_size: Annotated[Optional[str], typer.Option(
        "--max-size", metavar="SIZE",
        help="Then remove the least recently used until the store fits SIZE (e.g. 50G).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove stored teachers (with their caches) that no queued or running run needs."""
    from kdtui.core.events import ACTIVE_STATUSES
    from kdtui.core.teachers import human_size, keys_in_use, prune_plan

    if older_than is None and max_size is None:
        raise fail("teachers prune: give --older-than AGE, --max-size SIZE, or both")
    age, size = (parse_duration(older_than) if older_than else None), (parse_size(max_size) if max_size else None)
    store, records = _entries(workspace)
    in_use, unreadable = keys_in_use(records, ACTIVE_STATUSES)
    if unreadable:
        raise fail(f"teachers prune: the spec of active run(s) {', '.join(unreadable)} cannot be read, so the "
                   f"teachers they need are unknown; nothing removed")
    entries = store.entries(records)
    chosen = prune_plan(entries, in_use, older_than_s=age, max_bytes=size)
    removed = chosen if dry_run else [e for e in chosen if store.remove(e)]
    kept_busy = [e for e in chosen if e not in removed]
    if as_json:
        print_json({"dry_run": dry_run, "removed": [e.key for e in removed], "busy": [e.key for e in kept_busy],
                    "freed_bytes": sum(e.bytes for e in removed), "in_use": sorted(in_use & {e.key for e in entries})})
        return
    verb = "would remove" if dry_run else "removed"
    for e in removed:
        sys.stdout.write(f"{verb} {e.key[:12]}  {human_size(e.bytes)}  {e.summary}\n")
    for e in kept_busy:
        sys.stdout.write(f"kept {e.key[:12]}: a run holds it right now\n")
    protected = len(in_use & {e.key for e in entries})
    sys.stdout.write(f"{verb} {len(removed)} teacher(s), {human_size(sum(e.bytes for e in removed))}; "
                     f"{protected} in use by queued or running runs kept\n")
