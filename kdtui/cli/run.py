"""`kdtui run`: run a spec (every point of its sweep) in the foreground, in the background through the
queue, data-parallel with torchrun, or on Ray. The foreground loop is shared with `runs resume`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kdtui.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, err, fail, finish, fmt_number, json_option,
                              open_store, out, pids_text, print_json, workspace_option)
from kdtui.core.events import ACTIVE_STATUSES, DONE, STOPPED
from kdtui.core.workspace import Workspace

if TYPE_CHECKING:
    from kdtui.core.registry import RunStore

EXECUTORS = ("local", "ray")


@click.command("run")
@click.argument("spec_path", metavar="SPEC.toml", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", default=None, help="Run a preset instead of a file (kdtui presets list).")
@click.option("--scale", default="tiny", show_default=True, help="The preset's scale: paper or tiny.")
@workspace_option
@click.option("--device", default=None, help="Override the spec's device (auto, cpu, cuda, cuda:N).")
@json_option
@click.option("--detach", is_flag=True, help="Run in the background and return at once.")
@click.option("--retrain-teachers", is_flag=True, help="Train teachers even if stored.")
@click.option("--slots-per-gpu", type=click.IntRange(min=1), default=None,
              help="With --detach: runs at once per GPU (or on a CPU-only box); default: the workspace's "
                   "settings.toml, else 1.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local (this box, through its queue) or ray.")
@click.option("--address", default=None,
              help="With --executor ray: the cluster (default: the one started on this box, else a new one).")
@click.option("--gpus-per-run", type=click.FloatRange(min=0), default=0.0,
              help="With --executor ray: GPUs each run asks for.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel processes per run (torchrun; one per GPU, or gloo on CPU). In the foreground.")
def command(spec_path: Path | None, preset: str | None, scale: str, workspace: Path | None, device: str | None,
            as_json: bool, detach: bool, retrain_teachers: bool, slots_per_gpu: int | None, executor: str,
            address: str | None, gpus_per_run: float, nproc: int) -> None:
    """Run an experiment spec (every point of its [sweep] grid)."""
    from kdtui.core.spec import SpecError, expand_sweep, load_spec, spec_from_dict  # pydantic: ~0.3 s, only here

    if (spec_path is None) == (preset is None):
        raise fail("give a spec file or --preset ID (one of them)")
    _check_ray_options(executor, address, gpus_per_run)
    if nproc > 1 and (detach or executor != "local"):
        raise fail("--nproc runs one data-parallel run in the foreground: not with --detach or --executor ray")
    try:
        if preset is not None:
            from kdtui.core.presets import load_preset
            spec, source = load_preset(preset, scale), f"preset {preset} ({scale})"
        else:
            spec, source = load_spec(spec_path), str(spec_path)
        if device is not None:
            spec = spec_from_dict({**spec.model_dump(mode="json", exclude_none=True), "device": device},
                                  source="--device")
        points = [point.resolved() for point in expand_sweep(spec, source=source)]
    except SpecError as exc:
        raise fail(str(exc))
    ws, store = open_store(workspace, create=True)  # the one command that may make a new workspace
    from kdtui.core.registry import record_with_history
    from kdtui.runs.service import RunService

    service = RunService(ws, store)
    run_ids: list[str] = []
    try:
        with DeferredInterrupt():
            # This process owns the queued runs until a worker (or the foreground loop) starts them.
            run_ids = service.submit(points, owner_pid=os.getpid())
        if executor == "ray":
            raise finish(_run_on_ray(ws, store, run_ids, address, gpus_per_run, as_json, detach, retrain_teachers))
        if detach:
            pids = service.launch(run_ids, retrain_teachers=retrain_teachers, slots_per_gpu=slots_per_gpu)
            if as_json:
                print_json([record_with_history(store, ws, run_id) for run_id in run_ids])
            else:
                for run_id in run_ids:
                    out.print(run_id)
            err.print(f"started in the background ({pids_text(pids)}), each run when a device slot is free "
                      f"(kdtui queue); follow with: kdtui runs tail {run_ids[0]}")
            raise finish(EXIT_OK)
        code = run_foreground(ws, store, run_ids, as_json, retrain_teachers, nproc=nproc)
    except KeyboardInterrupt:  # Ctrl-C outside a run's own signal handling: nothing stays queued
        # By pid, not by `run_ids`: the interrupt may land after the sweep was registered but
        # before submit returned its ids.
        service.release_owned([r["id"] for r in store.find(status=ACTIVE_STATUSES)])
        raise finish(EXIT_INTERRUPTED)
    raise finish(code)


def _check_ray_options(executor: str, address: str | None, gpus_per_run: float) -> None:
    """Check the Ray options before any run is registered."""
    if executor == "local":
        if address is not None or gpus_per_run:
            raise fail("--address and --gpus-per-run go with --executor ray")
        return
    from kdtui.runs.executors.ray_cluster import RayUnavailable, require_ray

    try:
        require_ray()
    except RayUnavailable as exc:
        raise fail(str(exc))


def _run_on_ray(ws: Workspace, store: RunStore, run_ids: list[str], address: str | None, gpus: float,
                as_json: bool, detach: bool, retrain: bool) -> int:
    from kdtui.core.registry import record_with_history
    from kdtui.runs.executors import ray_cluster

    if detach:
        pid = ray_cluster.launch_detached(ws, run_ids, address=address, gpus_per_run=gpus, retrain_teachers=retrain)
        for run_id in run_ids:  # the driver owns them now (a dead driver's runs read as interrupted)
            store.update(run_id, pid=pid)
        if as_json:
            print_json([record_with_history(store, ws, run_id) for run_id in run_ids])
        else:
            for run_id in run_ids:
                out.print(run_id)
        err.print(f"sent to Ray by a background driver (pid {pid}); follow with: kdtui runs tail {run_ids[0]}")
        return EXIT_OK
    console = err if as_json else out
    console.print(f"sending {len(run_ids)} run(s) to Ray; follow with: kdtui runs tail {run_ids[0]}")

    def finished(record: dict) -> None:
        console.print(f"{record['id']} {record['status']}  test agr "
                      f"{fmt_number((record.get('metrics') or {}).get('test_agreement'))}"
                      + (f"  error: {record['error']}" if record.get("error") else ""), markup=False)

    records = ray_cluster.drive(ws, store, run_ids, address=address, gpus_per_run=gpus, retrain_teachers=retrain,
                                on_record=finished)
    records = [record_with_history(store, ws, r["id"]) for r in records]
    if as_json:
        print_json(records[0] if len(records) == 1 else records)
    else:
        from kdtui.cli.progress import summary_table
        for record in records:
            out.print(summary_table(record))
    if any(r["status"] == STOPPED for r in records):
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r["status"] == DONE for r in records) else EXIT_FAILED


def _with_history(store: RunStore, ws: Workspace, record: dict) -> dict:
    from kdtui.core.registry import RunNotFound, record_with_history

    try:
        return record_with_history(store, ws, record["id"])
    except RunNotFound:  # removed from another shell while it ran: what the run itself returned
        return record


class DeferredInterrupt:
    """Ctrl-C inside this block is raised as KeyboardInterrupt at `check()` (and on leaving the
    block), never in the middle of a registry write or an import."""

    def __enter__(self) -> "DeferredInterrupt":
        import signal
        self.hit = False
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def check(self) -> None:
        if self.hit:
            self.hit = False
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        import signal
        signal.signal(signal.SIGINT, self._previous)
        if exc[0] is None:
            self.check()


def run_foreground(ws: Workspace, store: RunStore, run_ids: list[str], as_json: bool, retrain: bool,
                   nproc: int = 1) -> int:
    """Run the queued runs one after another in this process, with progress bars; the exit code."""
    from functools import partial

    from kdtui.cli.progress import RunProgress, summary_table
    from kdtui.runs.execute import execute
    from kdtui.runs.executors.ddp import run_data_parallel
    from kdtui.runs.service import RunService

    run_one = execute if nproc == 1 else partial(run_data_parallel, nproc=nproc)

    console = (err if as_json else out).get()
    records, code = [], EXIT_OK

    def stop_rest(position: int) -> None:  # Ctrl-C ends the sweep; the rest stay resumable
        RunService(ws, store).release_owned(run_ids[position:])

    for position, run_id in enumerate(run_ids):
        try:
            with DeferredInterrupt() as interrupt:
                # execute() catches SIGINT itself while it runs; this covers the moments between.
                with RunProgress(console, run_id) as progress:
                    interrupt.check()
                    record = run_one(ws, store, run_id, retrain_teachers=retrain, on_event=progress)
        except KeyboardInterrupt:  # Ctrl-C between runs, or while the progress display started
            stop_rest(position)
            records.append(store.get(run_id) or {"id": run_id, "status": STOPPED})
            code = EXIT_INTERRUPTED
            break
        if record.get("skipped"):  # stopped or removed from another shell while it waited
            continue
        records.append(record)
        if record["status"] == STOPPED:
            stop_rest(position + 1)
            code = EXIT_INTERRUPTED
            break
        if record["status"] != DONE:
            code = EXIT_FAILED
            err.print(f"error: run {record['id']} failed: {record.get('error') or 'unknown error'}",
                      markup=False, highlight=False, soft_wrap=True)
    if as_json:
        # PRODUCT.md's record: the registry document plus its per-epoch history.
        full = [_with_history(store, ws, record) for record in records]
        print_json(full[0] if len(run_ids) == 1 and full else full)
    else:
        for record in records:
            out.print(summary_table(record))
            out.print(f"results: {ws.run_dir(record['id'])}")
    return code
