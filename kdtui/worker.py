"""The background process behind `kdtui run --detach` and launches from the app.

    python -m kdtui.worker --workspace DIR RUN_ID [RUN_ID ...] [--retrain-teachers] [--device D]

Runs the given (already registered, `queued`) runs one after another; one stopped meanwhile is skipped.
"""
from __future__ import annotations

import argparse
import sys

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
    for run_id in args.run_ids:
        record = store.get(run_id)
        if record is None or record["status"] != "queued":
            continue  # removed, or stopped while it waited
        record = execute(workspace, store, run_id, retrain_teachers=args.retrain_teachers, device=args.device)
        if record["status"] == "stopped":
            return 130
        worst = max(worst, 0 if record["status"] == "done" else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
