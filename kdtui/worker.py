"""The background process behind `kdtui run --detach` and launches from the app.

    python -m kdtui.worker --workspace DIR RUN_ID [RUN_ID ...] [--retrain-teachers] [--device D]

Runs the given (already registered, `queued`) runs one after another; one stopped meanwhile is skipped.
"""
from __future__ import annotations

import argparse
import sys
import time

from kdtui.registry import RunStore
from kdtui.runner import execute
from kdtui.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdtui.worker")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--retrain-teachers", action="store_true")
    parser.add_argument("--device")
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args(argv)
    workspace = Workspace(args.workspace)
    store = RunStore(workspace)
    worst = 0
    for position, run_id in enumerate(args.run_ids):
        record = store.get(run_id)
        if record is None or record["status"] != "queued":
            continue  # removed, or stopped while it waited
        record = execute(workspace, store, run_id, retrain_teachers=args.retrain_teachers, device=args.device)
        if record.get("skipped"):
            continue  # stopped or removed while this process started up
        if record["status"] == "stopped":
            # Stopped (kdtui runs stop, or SIGTERM): the rest of the sweep stops too, resumable.
            for later in args.run_ids[position + 1:]:
                current = store.get(later)
                if current is not None and current["status"] == "queued":
                    store.update(later, status="stopped", finished=time.time())
            return 130
        worst = max(worst, 0 if record["status"] == "done" else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
