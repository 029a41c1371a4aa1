"""One process of a data-parallel run, started by torchrun for `kdtui run SPEC --nproc N`:

    python -m torch.distributed.run --standalone --nproc_per_node N -m kdtui.ddp --workspace DIR RUN_ID

Every process trains its share of each batch (kernels.distributed); rank 0 writes the events, the
checkpoints and the record, exactly as a single-process run does.
"""
from __future__ import annotations

import argparse
import sys

from kdtui.registry import RunStore
from kdtui.runner import execute
from kdtui.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdtui.ddp")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--retrain-teachers", action="store_true")
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    workspace = Workspace(args.workspace)
    store = RunStore(workspace)
    record = store.get(args.run_id)
    if record is None:
        print(f"kdtui.ddp: no run {args.run_id} in {workspace.root}", file=sys.stderr)
        return 2

    import torch.distributed

    from kernels.distributed import init_from_torchrun

    shards, device = init_from_torchrun((record.get("spec") or {}).get("device") or "auto")
    try:
        final = execute(workspace, store, args.run_id, retrain_teachers=args.retrain_teachers, device=device,
                        shards=shards)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not shards.main:
        return 0  # the main process's exit status (and the record) carry the run's outcome
    if final.get("status") == "stopped":
        return 130
    return 0 if final.get("status") == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
