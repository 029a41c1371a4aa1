"""`kdtui run`: run a spec (every point of its sweep) in the foreground, in the background through the
queue, data-parallel with torchrun, or on Ray: it picks the executor (kdtui.runs.executors) and shows
what it does. The foreground display is shared with `runs resume`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from kdtui.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, JsonOption, WorkspaceOption, err, fail, finish,
                              fmt_number, noun, open_store, out, pids_text, print_json, resolve)
from kdtui.core.events import ACTIVE_STATUSES, DONE, STOPPED
from kdtui.core.procs import DeferredInterrupt, make_ctrl_c_live
from kdtui.core.workspace import Workspace
from kdtui.runs.executors import Executor, Started

if TYPE_CHECKING:
    from kdtui.core.registry import RunStore

EXECUTORS = ("local", "ray", "slurm")

app = noun()


@app.command("run")
def command(
    spec_path: Annotated[Optional[Path], typer.Argument(metavar="SPEC.toml", dir_okay=False, show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option(help="Run a preset instead of a file (kdtui presets list).")] = None,
    scale: Annotated[str, typer.Option(help="The preset's scale: paper or tiny.")] = "tiny",
    from_run: Annotated[Optional[str], typer.Option(
        "--from", metavar="ID",
        help="Run again the resolved spec of this run (an id or a unique prefix), changed by --set.")] = None,
    sets: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE",
        help="With --from: change one spec key (distill.temperature=8; the value read as TOML, else as text); "
             "repeatable.")] = None,
    workspace: WorkspaceOption = None,
    device: Annotated[Optional[str], typer.Option(help="Override the spec's device (auto, cpu, cuda, cuda:N).")] = None,
    as_json: JsonOption = False,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background and return at once.")] = False,
    retrain_teachers: Annotated[bool, typer.Option("--retrain-teachers", help="Train teachers even if stored.")] = False,
    slots_per_gpu: Annotated[Optional[int], typer.Option(
        min=1, help="With --detach: runs at once per GPU (or on a CPU-only box); default: the workspace's "
                    "settings.toml, else 1.")] = None,
    executor: Annotated[Literal[EXECUTORS], typer.Option(
        help="local (this box, through its queue), ray, or slurm (a job array, through submitit).")] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="With --executor ray: the cluster (default: the one started on this box, else a new one).")] = None,
    gpus_per_run: Annotated[float, typer.Option(min=0.0, help="With --executor ray or slurm: GPUs each run asks for.")] = 0.0,
    partition: Annotated[Optional[str], typer.Option(
        help="With --executor slurm: the partition (default: settings.toml's [slurm]).")] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time", help="With --executor slurm: each run's time limit (90, 1:30:00, 2-00:00:00; default 1 hour).")] = None,
    mem: Annotated[Optional[str], typer.Option(help="With --executor slurm: memory per run (16G, 500M).")] = None,
    array_parallelism: Annotated[Optional[int], typer.Option(
        min=1, help="With --executor slurm: at most this many runs at once (default 64).")] = None,
    nproc: Annotated[int, typer.Option(
        min=1, help="Data-parallel processes per run (torchrun; one per GPU, or gloo on CPU). In the foreground.")] = 1,
) -> None:
    """Run an experiment spec (every point of its [sweep] grid)."""
    from kdtui.core.spec import SpecError, check_files, expand_sweep, load_spec, spec_from_dict  # pydantic: ~0.3 s, only here

    if sum(given is not None for given in (spec_path, preset, from_run)) != 1:
        raise fail("give a spec file, --preset ID or --from RUN_ID (one of them)")
    if sets and from_run is None:
        raise fail("--set goes with --from RUN_ID")
    slurm_given = dict(partition=partition, time=time_limit, mem=mem, array_parallelism=array_parallelism)
    if executor != "slurm" and any(value is not None for value in slurm_given.values()):
        raise fail("--partition, --time, --mem and --array-parallelism go with --executor slurm")
    if executor == "slurm":
        _check_slurm_installed(address)
    else:
        _check_ray_options(executor, address, gpus_per_run)
    if nproc > 1 and (detach or executor != "local"):
        raise fail("--nproc runs one data-parallel run in the foreground: not with --detach or --executor ray/slurm")
    try:
        origin = None  # the preset the runs come from, kept in their records (`kdtui report --preset`)
        if preset is not None:
            from kdtui.core.presets import get_preset
            found = get_preset(preset)
            spec, source, origin = found.spec(scale), f"preset {preset} ({scale})", (found.id, scale)
        elif from_run is not None:
            from kdtui.core.redo import redo_spec

            record = resolve(open_store(workspace)[1], from_run)
            source = f"run {record['id']}"
            spec = redo_spec(record.get("spec") or {}, list(sets or ()), source="--set" if sets else source)
        else:
            spec, source = load_spec(spec_path), str(spec_path)
        if device is not None:
            spec = spec_from_dict({**spec.model_dump(mode="json", exclude_none=True), "device": device},
                                  source="--device")
        points = [point.resolved() for point in expand_sweep(spec, source=source)]
        check_files(points, source)
    except SpecError as exc:
        raise fail(str(exc))
    make_ctrl_c_live()  # from here on a Ctrl-C stops what this command registers
    ws, store = open_store(workspace, create=True)  # the one command that may make a new workspace
    slurm = _slurm_options(ws, gpus_per_run, slurm_given) if executor == "slurm" else None  # before registering
    from kdtui.runs.service import RunService, ServiceError

    service = RunService(ws, store)
    try:
        with DeferredInterrupt():
            if detach and executor == "local":
                # Slots and devices are checked before anything is registered (one line, exit 2).
                run_ids, pids = service.submit_detached(points, retrain_teachers=retrain_teachers,
                                                        slots_per_gpu=slots_per_gpu, preset=origin)
            else:
                # This process owns the queued runs until it (or its Ray driver) starts them.
                run_ids = service.submit(points, owner_pid=os.getpid(), preset=origin)
        if detach:
            if executor == "ray":
                pids = _ray(ws, store, address, gpus_per_run, retrain_teachers, detach=True).start(run_ids).pids
            elif executor == "slurm":
                pids = _slurm(ws, store, slurm, retrain_teachers, detach=True).start(run_ids).pids  # none: Slurm runs them
            _print_detached(ws, store, run_ids, as_json, pids, executor)
            raise finish(EXIT_OK)
        if executor == "ray":
            code = _run_on_ray(ws, store, run_ids, address, gpus_per_run, as_json, retrain_teachers)
        elif executor == "slurm":
            code = _run_on_slurm(ws, store, run_ids, slurm, as_json, retrain_teachers)
        else:
            code = run_foreground(ws, store, run_ids, as_json, retrain_teachers, nproc=nproc)
    except ServiceError as exc:
        raise fail(str(exc))
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


def _check_slurm_installed(address: str | None) -> None:
    if address is not None:
        raise fail("--address goes with --executor ray")
    from kdtui.runs.executors.slurm import SlurmUnavailable, require_submitit

    try:
        require_submitit()
    except SlurmUnavailable as exc:
        raise fail(str(exc))


def _slurm_options(ws: Workspace, gpus_per_run: float, given: dict):
    """The submission's Slurm options (the command line over settings.toml), checked, and Slurm
    itself found, before any run is registered."""
    from kdtui.runs.executors.slurm import SlurmUnavailable, require_cluster
    from kdtui.runs.executors.slurm_jobs import SlurmSettingError, slurm_options

    try:
        options = slurm_options(ws, gpus_per_run=gpus_per_run or None, **given)
        require_cluster(options)
    except (SlurmSettingError, SlurmUnavailable) as exc:
        raise fail(str(exc))
    return options


def _slurm(ws: Workspace, store: RunStore, options, retrain: bool, *, detach: bool = False,
           on_record=None) -> "Executor":
    from kdtui.runs.executors.slurm import SlurmExecutor

    return SlurmExecutor(ws, store, options, retrain_teachers=retrain, detach=detach, on_record=on_record)


def _run_on_slurm(ws: Workspace, store: RunStore, run_ids: list[str], options, as_json: bool, retrain: bool) -> int:
    console = err if as_json else out

    def finished(record: dict) -> None:
        console.print(f"{record['id']} {record['status']}  test agr "
                      f"{fmt_number((record.get('metrics') or {}).get('test_agreement'))}"
                      + (f"  error: {record['error']}" if record.get("error") else ""), markup=False)

    executor = _slurm(ws, store, options, retrain, on_record=finished)
    console.print(f"submitting {len(run_ids)} run(s) to Slurm; follow with: kdtui runs tail {run_ids[0]}", markup=False)
    started = executor.start(run_ids)
    _print_records(ws, store, started.records, as_json, single=len(started.records) == 1, folders=True)
    return _exit_code(started)


def _ray(ws: Workspace, store: RunStore, address: str | None, gpus: float, retrain: bool, *, detach: bool = False,
         on_record=None) -> "Executor":
    from kdtui.runs.executors.ray_cluster import RayExecutor

    return RayExecutor(ws, store, address=address, gpus_per_run=gpus, retrain_teachers=retrain, detach=detach,
                       on_record=on_record)


def _print_detached(ws: Workspace, store: RunStore, run_ids: list[str], as_json: bool, pids: list[int],
                    executor: str) -> None:
    from kdtui.core.registry import record_with_history

    if as_json:
        print_json([record_with_history(store, ws, run_id) for run_id in run_ids])
    else:
        for run_id in run_ids:
            out.print(run_id)
    if executor == "ray":
        err.print(f"sent to Ray by a background driver (pid {pids[0]}); follow with: kdtui runs tail {run_ids[0]}")
    elif executor == "slurm":
        from kdtui.runs.executors.slurm import job_ids

        err.print(f"submitted to Slurm as job(s) {', '.join(job_ids(store, run_ids))}; follow with: "
                  f"kdtui runs tail {run_ids[0]}", markup=False)
    else:
        err.print(f"started in the background ({pids_text(pids)}), each run when a device slot is free "
                  f"(kdtui queue); follow with: kdtui runs tail {run_ids[0]}")


def _run_on_ray(ws: Workspace, store: RunStore, run_ids: list[str], address: str | None, gpus: float,
                as_json: bool, retrain: bool) -> int:
    console = err if as_json else out
    console.print(f"sending {len(run_ids)} run(s) to Ray; follow with: kdtui runs tail {run_ids[0]}")

    def finished(record: dict) -> None:
        console.print(f"{record['id']} {record['status']}  test agr "
                      f"{fmt_number((record.get('metrics') or {}).get('test_agreement'))}"
                      + (f"  error: {record['error']}" if record.get("error") else ""), markup=False)

    started = _ray(ws, store, address, gpus, retrain, on_record=finished).start(run_ids)
    _print_records(ws, store, started.records, as_json, single=len(started.records) == 1, folders=False)
    return _exit_code(started)


def run_foreground(ws: Workspace, store: RunStore, run_ids: list[str], as_json: bool, retrain: bool,
                   nproc: int = 1) -> int:
    """Run the queued runs one after another in this process, with progress bars; the exit code."""
    from kdtui.cli.progress import RunProgress

    console = (err if as_json else out).get()
    options = dict(retrain_teachers=retrain, watch=lambda run_id: RunProgress(console, run_id),
                   on_record=_say_if_failed)
    if nproc == 1:
        from kdtui.runs.executors.local import LocalExecutor
        executor: Executor = LocalExecutor(ws, store, **options)
    else:
        from kdtui.runs.executors.ddp import DataParallelExecutor
        executor = DataParallelExecutor(ws, store, nproc=nproc, **options)
    started = executor.start(run_ids)
    _print_records(ws, store, started.records, as_json, single=len(run_ids) == 1, folders=True)
    return _exit_code(started)


def _say_if_failed(record: dict) -> None:
    if record["status"] not in (DONE, STOPPED):
        err.print(f"error: run {record['id']} failed: {record.get('error') or 'unknown error'}",
                  markup=False, highlight=False, soft_wrap=True)


def _exit_code(started: Started) -> int:
    if started.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(record["status"] == DONE for record in started.records) else EXIT_FAILED


def _print_records(ws: Workspace, store: RunStore, records: list[dict], as_json: bool, *, single: bool,
                   folders: bool) -> None:
    if as_json:
        # The whole record: the registry document plus its per-epoch history.
        full = [_with_history(store, ws, record) for record in records]
        print_json(full[0] if single and full else full)
        return
    from kdtui.cli.progress import summary_table

    for record in records:
        out.print(summary_table(record))
        if folders:
            out.print(f"results: {ws.run_dir(record['id'])}")


def _with_history(store: RunStore, ws: Workspace, record: dict) -> dict:
    from kdtui.core.registry import RunNotFound, record_with_history

    try:
        return record_with_history(store, ws, record["id"])
    except RunNotFound:  # removed from another shell while it ran: what the run itself returned
        return record
