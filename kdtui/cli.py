"""The `kdtui` command line: run specs, and find, compare and export runs from the shell.

Exit codes (PRODUCT.md): 0 success, 1 run failed, 2 bad input, 130 interrupted. Nothing here
imports torch at module level: only `run` and `runs resume` pay for it, inside the runner.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from kdtui.core import eventlog
from kdtui.core.events import ACTIVE_STATUSES
from kdtui.core.registry import RegistryError, RunStore
from kdtui.core.workspace import Workspace


def _plain_coercion() -> None:
    """Start-up: recent typer coerces every option value through a pydantic TypeAdapter, and
    importing pydantic plus building the adapters is ~0.2 s of CPU, most of what `kdtui runs list`
    costs before it reads anything (bench/cli_startup.py). Every parameter here is a plain str,
    Path or list of str, so those are converted directly; any other annotation, or a typer whose
    internals differ from what is checked below, keeps typer's own path (correct, only slower).
    """
    try:
        from dataclasses import dataclass, fields

        from typer import core as typer_core
        from typer._coercion import RuntimeParam
        original = typer_core._TyperParameter.get_runtime_param
        if {f.name for f in fields(RuntimeParam)} != {"parameter_info", "annotation"}:
            return
    except (ImportError, AttributeError, TypeError):
        return

    @dataclass(frozen=True)
    class PlainRuntimeParam(RuntimeParam):
        def _coerce_value(self, value, param, ctx):
            convert = _PLAIN_TYPES[self.annotation]
            if isinstance(value, (list, tuple)):
                return [convert(item) for item in value]
            return convert(value)

    def get_runtime_param(self):
        if getattr(self, "_runtime_param", None) is None:
            descriptor = getattr(self, "type_descriptor", None)
            annotation = getattr(descriptor, "annotation", None)
            try:
                plain = annotation in _PLAIN_TYPES
            except TypeError:  # an unhashable annotation
                plain = False
            if plain and getattr(descriptor, "file_annotation", None) is None:
                self._runtime_param = PlainRuntimeParam(parameter_info=descriptor.parameter_info,
                                                        annotation=annotation)
        return original(self)

    typer_core._TyperParameter.get_runtime_param = get_runtime_param


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y", "t"):
        return True
    if text in ("0", "false", "no", "off", "n", "f", ""):
        return False
    raise typer.BadParameter(f"{value!r} is not a valid boolean")


_PLAIN_TYPES = {bool: _flag, Optional[bool]: _flag, str: str, Optional[str]: str, Path: Path, Optional[Path]: Path,
                List[str]: str, Optional[List[str]]: str, list[str]: str, Optional[list[str]]: str}
_plain_coercion()

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# Plain (click-style) help: typer's rich help imports rich.markdown and friends, ~0.2 s of the
# 0.5 s start-up budget (bench/cli_startup.py).
app = typer.Typer(add_completion=False, no_args_is_help=False, invoke_without_command=True, rich_markup_mode=None,
                  help="kdtui: a terminal experiment manager for knowledge distillation.")
runs_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                       help="Find, follow, compare and export runs.")
app.add_typer(runs_app, name="runs")



class _LazyConsole:
    """A rich Console made on first use: importing rich.console costs ~0.1 s that `runs list`,
    the JSON commands and `--help` never need."""

    def __init__(self, **options):
        self._options = options
        self._console = None

    def get(self):
        """The rich Console itself (for rich's own machinery: Progress, Live)."""
        if self._console is None:
            from rich.console import Console
            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name):
        return getattr(self.get(), name)


out = _LazyConsole(highlight=False)  # ids and paths are not numbers to colour
err = _LazyConsole(stderr=True, highlight=False)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder (default: $KDTUI_HOME or ./runs).")
JsonOpt = typer.Option(False, "--json", help="Print JSON only on stdout.")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """One line on stderr, `error: ...`, and the exit to raise."""
    err.print(f"[red]error:[/red] {_escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def open_store(workspace: Optional[str]) -> tuple[Workspace, RunStore]:
    ws = Workspace(workspace)
    return ws, RunStore(ws)


def print_json(payload) -> None:
    """Strict JSON on stdout (NaN/inf become null, so jq and other tools can read it): indented
    on a terminal, compact when piped (like `gh --json`; the compact encoder is C, ~10x faster
    on a 1,000-run listing)."""
    indent = 2 if sys.stdout.isatty() else None
    try:
        text = json.dumps(payload, indent=indent, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(eventlog.sanitize(json.loads(json.dumps(payload, default=str))), indent=indent)
    sys.stdout.write(text + "\n")


@app.callback()
def main_callback(ctx: typer.Context, workspace: Optional[str] = WorkspaceOpt,
                  no_mouse: bool = typer.Option(False, "--no-mouse", help="Keyboard only: leave the mouse to the terminal.")) -> None:
    """With no command: open the terminal app on the workspace."""
    if ctx.invoked_subcommand is not None:
        if workspace is not None:  # `kdtui -w W runs list`: the commands read $KDTUI_HOME as their default
            os.environ["KDTUI_HOME"] = workspace
        return
    from kdtui.tui import run_app

    run_app(workspace, mouse=not no_mouse)


@app.command()
def run(spec_path: Optional[Path] = typer.Argument(None, metavar="SPEC.toml", help="The experiment spec."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Run a preset instead of a file (kdtui presets list)."),
        scale: str = typer.Option("tiny", "--scale", help="The preset's scale: paper or tiny."),
        workspace: Optional[str] = WorkspaceOpt,
        device: Optional[str] = typer.Option(None, help="Override the spec's device (auto, cpu, cuda, cuda:N)."),
        as_json: bool = JsonOpt,
        detach: bool = typer.Option(False, "--detach", help="Run in the background and return at once."),
        retrain_teachers: bool = typer.Option(False, "--retrain-teachers", help="Train teachers even if stored."),
        slots_per_gpu: Optional[int] = typer.Option(None, "--slots-per-gpu",
                                                    help="With --detach: runs at once per GPU (or on a CPU-only box); "
                                                         "default: the workspace's settings.toml, else 1."),
        executor: str = typer.Option("local", "--executor", help="local (this box, through its queue) or ray."),
        address: Optional[str] = typer.Option(None, "--address", help="With --executor ray: the cluster (default: "
                                                                        "the one started on this box, else a new one)."),
        gpus_per_run: str = typer.Option("0", "--gpus-per-run", help="With --executor ray: GPUs each run asks for."),
        nproc: str = typer.Option("1", "--nproc", help="Data-parallel processes per run (torchrun; one per GPU, "
                                                        "or gloo on CPU). In the foreground.")) -> None:
    """Run an experiment spec (every point of its [sweep] grid)."""
    from kdtui.core.spec import SpecError, expand_sweep, load_spec, spec_from_dict  # pydantic: ~0.3 s, only here

    if (spec_path is None) == (preset is None):
        raise fail("give a spec file or --preset ID (one of them)")
    if slots_per_gpu is not None and slots_per_gpu < 1:
        raise fail(f"--slots-per-gpu {slots_per_gpu}: must be a whole number ≥ 1")
    gpus = _ray_options(executor, address, gpus_per_run)
    if not nproc.isdigit() or int(nproc) < 1:
        raise fail(f"--nproc {nproc!r}: must be a whole number ≥ 1")
    if int(nproc) > 1 and (detach or executor != "local"):
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
    ws, store = open_store(workspace)
    from kdtui.runs.service import RunService

    service = RunService(ws, store)
    run_ids: list[str] = []
    try:
        with _DeferredInterrupt():
            # This process owns the queued runs until a worker (or the foreground loop) starts them.
            run_ids = service.submit(points, owner_pid=os.getpid())
        if executor == "ray":
            raise typer.Exit(_run_on_ray(ws, store, run_ids, address, gpus, as_json, detach, retrain_teachers))
        if detach:
            pids = service.launch(run_ids, retrain_teachers=retrain_teachers, slots_per_gpu=slots_per_gpu)
            if as_json:
                print_json([store.get(run_id) for run_id in run_ids])
            else:
                for run_id in run_ids:
                    out.print(run_id)
            err.print(f"started in the background ({_pids(pids)}), each run when a device slot is free "
                      f"(kdtui queue); follow with: kdtui runs tail {run_ids[0]}")
            raise typer.Exit(EXIT_OK)
        code = _run_foreground(ws, store, run_ids, as_json, retrain_teachers, nproc=int(nproc))
    except KeyboardInterrupt:  # Ctrl-C outside a run's own signal handling: nothing stays queued
        # By pid, not by `run_ids`: the interrupt may land after the sweep was registered but
        # before submit returned its ids.
        service.release_owned([r["id"] for r in store.find(status=ACTIVE_STATUSES)])
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(code)


def _ray_options(executor: str, address: str | None, gpus_per_run: str) -> float:
    """Check --executor and its options before any run is registered; returns GPUs per run."""
    if executor not in ("local", "ray"):
        raise fail(f"--executor {executor!r}: allowed: local, ray")
    try:
        gpus = float(gpus_per_run)
    except ValueError:
        gpus = -1.0
    if not gpus >= 0:
        raise fail(f"--gpus-per-run {gpus_per_run!r}: must be a number ≥ 0")
    if executor == "local":
        if address is not None or gpus:
            raise fail("--address and --gpus-per-run go with --executor ray")
        return 0.0
    from kdtui.runs.executors.ray_cluster import RayUnavailable, require_ray

    try:
        require_ray()
    except RayUnavailable as exc:
        raise fail(str(exc))
    return gpus


def _run_on_ray(ws: Workspace, store: RunStore, run_ids: list[str], address: str | None, gpus: float,
                as_json: bool, detach: bool, retrain: bool) -> int:
    from kdtui.runs.executors import ray_cluster as ray_executor

    if detach:
        pid = ray_executor.launch_detached(ws, run_ids, address=address, gpus_per_run=gpus, retrain_teachers=retrain)
        for run_id in run_ids:  # the driver owns them now (a dead driver's runs read as interrupted)
            store.update(run_id, pid=pid)
        if as_json:
            print_json([store.get(run_id) for run_id in run_ids])
        else:
            for run_id in run_ids:
                out.print(run_id)
        err.print(f"sent to Ray by a background driver (pid {pid}); follow with: kdtui runs tail {run_ids[0]}")
        return EXIT_OK
    console = err if as_json else out
    console.print(f"sending {len(run_ids)} run(s) to Ray; follow with: kdtui runs tail {run_ids[0]}")

    def finished(record: dict) -> None:
        console.print(f"{record['id']} {record['status']}  test agr {_fmt((record.get('metrics') or {}).get('test_agreement'))}"
                      + (f"  error: {record['error']}" if record.get("error") else ""), markup=False)

    records = ray_executor.drive(ws, store, run_ids, address=address, gpus_per_run=gpus, retrain_teachers=retrain,
                                 on_record=finished)
    if as_json:
        print_json(records[0] if len(records) == 1 else records)
    else:
        from kdtui.progress import summary_table
        for record in records:
            out.print(summary_table(record))
    if any(r["status"] == "stopped" for r in records):
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r["status"] == "done" for r in records) else EXIT_FAILED


class _DeferredInterrupt:
    """Ctrl-C inside this block is raised as KeyboardInterrupt at `check()` (and on leaving the
    block), never in the middle of a registry write or an import."""

    def __enter__(self) -> "_DeferredInterrupt":
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


def _pids(pids: list[int]) -> str:
    return f"pid {pids[0]}" if len(pids) == 1 else f"{len(pids)} workers, pids {pids[0]}…{pids[-1]}"


def _run_foreground(ws: Workspace, store: RunStore, run_ids: list[str], as_json: bool, retrain: bool,
                    nproc: int = 1) -> int:
    from kdtui.progress import RunProgress, summary_table
    from kdtui.runs.execute import execute
    from kdtui.runs.service import RunService

    from functools import partial

    from kdtui.runs.executors.ddp import run_data_parallel

    run_one = execute if nproc == 1 else partial(run_data_parallel, nproc=nproc)

    console = (err if as_json else out).get()
    records, code = [], EXIT_OK

    def stop_rest(position: int) -> None:  # Ctrl-C ends the sweep; the rest stay resumable
        RunService(ws, store).release_owned(run_ids[position:])

    for position, run_id in enumerate(run_ids):
        try:
            with _DeferredInterrupt() as interrupt:
                # execute() catches SIGINT itself while it runs; this covers the moments between.
                with RunProgress(console, run_id) as progress:
                    interrupt.check()
                    record = run_one(ws, store, run_id, retrain_teachers=retrain, on_event=progress)
        except KeyboardInterrupt:  # Ctrl-C between runs, or while the progress display started
            stop_rest(position)
            records.append(store.get(run_id) or {"id": run_id, "status": "stopped"})
            code = EXIT_INTERRUPTED
            break
        if record.get("skipped"):  # stopped or removed from another shell while it waited
            continue
        records.append(record)
        if record["status"] == "stopped":
            stop_rest(position + 1)
            code = EXIT_INTERRUPTED
            break
        if record["status"] != "done":
            code = EXIT_FAILED
            err.print(f"error: run {record['id']} failed: {record.get('error') or 'unknown error'}",
                      markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print_json(records[0] if len(run_ids) == 1 and records else records)
    else:
        for record in records:
            out.print(summary_table(record))
            out.print(f"results: {ws.run_dir(record['id'])}")
    return code


# -- runs ------------------------------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _age(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "—"
    seconds = max(time.time() - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _resolve(store: RunStore, prefix: str) -> dict:
    try:
        return store.resolve(prefix)
    except RegistryError as exc:
        raise fail(str(exc))


@runs_app.command("list")
def runs_list(workspace: Optional[str] = WorkspaceOpt,
              status: Optional[str] = typer.Option(None, help="Only runs with this status."),
              name: Optional[str] = typer.Option(None, help="Only runs whose name contains this."),
              group: Optional[str] = typer.Option(None, help="Only runs in this seed group (hash prefix)."),
              as_json: bool = JsonOpt) -> None:
    """List runs, newest last."""
    _, store = open_store(workspace)
    records = store.find(status=status, name=name, group=group)
    if as_json:
        print_json(records)
        return
    sys.stdout.write(_plain_table(
        [("id", "<"), ("name", "<"), ("status", "<"), ("train agr", ">"), ("test agr", ">"), ("test acc", ">"),
         ("group", "<"), ("age", ">")],
        [[r["id"], str(r.get("name") or ""), str(r.get("status")), _fmt((r.get("metrics") or {}).get("train_agreement")),
          _fmt((r.get("metrics") or {}).get("test_agreement")), _fmt((r.get("metrics") or {}).get("test_acc")),
          (r.get("group_hash") or "")[:8], _age(r.get("created"))] for r in records],
        squeeze=1))


def _plain_table(columns: list[tuple[str, str]], rows: list[list[str]], squeeze: int) -> str:
    """Aligned text columns, like `gh run list`: cheap for thousands of rows (a rich Table spends
    ~2 ms a row measuring and wrapping). Column `squeeze` is cut with '…' to fit the terminal;
    the others (ids, statuses, numbers) are never cut."""
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, (name, _) in enumerate(columns)]
    width = shutil.get_terminal_size((100, 24)).columns
    gap = 2
    over = sum(widths) + gap * (len(widths) - 1) - width
    if over > 0:
        widths[squeeze] = max(len(columns[squeeze][0]), widths[squeeze] - over)

    def line(cells: list[str]) -> str:
        parts = []
        for cell, w, (_, align) in zip(cells, widths, columns):
            if len(cell) > w:
                cell = cell[: max(w - 1, 0)] + "…"
            parts.append(cell.ljust(w) if align == "<" else cell.rjust(w))
        return (" " * gap).join(parts).rstrip()

    return "\n".join([line([name for name, _ in columns])] + [line(row) for row in rows]) + "\n"


HISTORY_COLUMNS = (("train_agreement", "train agr"), ("train_agreement_eval", "clean agr"),
                   ("test_agreement", "test agr"), ("test_acc", "test acc"), ("test_kl", "test KL"),
                   ("train_loss", "loss"))


@runs_app.command("show")
def runs_show(run_id: str, workspace: Optional[str] = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Show one run: its record and per-epoch history."""
    ws, store = open_store(workspace)
    record = _with_history(ws, _resolve(store, run_id))
    if as_json:
        print_json(record)
        return
    from kdtui.progress import summary_table
    out.print(summary_table(record))
    for key in ("status", "device", "host", "pid", "spec_hash", "group_hash"):
        out.print(f"{key}: {record.get(key)}")
    for teacher in record.get("teachers") or []:
        out.print(f"teacher {teacher.get('member')}: {teacher.get('key', '')[:12]} "
                  f"{'reused' if teacher.get('reused') else 'trained'}, test acc {_fmt(teacher.get('test_acc'))}")
    history = record["history"]
    if history:
        from rich.table import Table

        # The headline curves only (every metric is in --json and export): fits 80 columns.
        shown = [(n, title) for n, title in HISTORY_COLUMNS if any(n in row for row in history)]
        table = Table(title="history")
        table.add_column("epoch", justify="right", no_wrap=True)
        for _, title in shown:
            table.add_column(title, justify="right", no_wrap=True)
        for row in history:
            table.add_row(str(row["epoch"]), *(_fmt(row.get(n)) for n, _ in shown))
        out.print(table)
    out.print(f"folder: {ws.run_dir(record['id'])}")


@runs_app.command("tail")
def runs_tail(run_id: str, workspace: Optional[str] = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Follow a run's events until it ends."""
    from kdtui.progress import describe_epoch
    from kdtui.core.procs import pid_alive

    ws, store = open_store(workspace)
    record = _resolve(store, run_id)

    def process_gone() -> bool:
        current = store.get(record["id"]) or {}
        return current.get("status") not in ("running", "queued") or not pid_alive(current.get("pid"))

    try:
        for event in eventlog.follow(ws.events_path(record["id"]), stop=process_gone):
            if as_json:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
                continue
            kind = event.get("type")
            if kind == "epoch":
                out.print(f"{event.get('phase')} {event.get('index', 0)}: {describe_epoch(event)}")
            elif kind in ("phase_start", "phase_end", "done", "failed", "stopped", "log"):
                detail = event.get("message") or event.get("error") or ""
                out.print(f"{kind} {event.get('phase', '')} {detail}".rstrip())
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED)
    final = store.get(record["id"]) or {}
    raise typer.Exit(EXIT_OK if final.get("status") == "done" else EXIT_FAILED)


def _with_history(ws: Workspace, record: dict) -> dict:
    """The record as PRODUCT.md shows it: the registry document plus the per-epoch `history`."""
    events = eventlog.read_all(ws.events_path(record["id"]), types=("epoch",))
    return {**record, "history": eventlog.history_from_events(events)}


def _records_with_history(ws: Workspace, store: RunStore, ids: list[str] | None) -> list[dict]:
    if ids is None:
        records = store.all()
    else:
        try:
            records = store.resolve_all(ids)
        except RegistryError as exc:
            raise fail(str(exc))
    return [_with_history(ws, r) for r in records]


@runs_app.command("compare")
def runs_compare(run_ids: List[str] = typer.Argument(..., help="Two or more run ids (unique prefixes work)."),
                 workspace: Optional[str] = WorkspaceOpt,
                 diff_only: bool = typer.Option(False, "--diff-only", help="Hide settings equal in every run."),
                 agg: str = typer.Option("last", help="last | best | min | max, per metric."),
                 by_group: bool = typer.Option(False, "--by-group", help="Mean ± std across seeds per group."),
                 as_json: bool = JsonOpt) -> None:
    """Compare runs side by side: settings, then metrics."""
    from kdtui.analysis.compare import compare, render_rich, to_json

    ws, store = open_store(workspace)
    records = _records_with_history(ws, store, run_ids)
    try:
        comparison = compare(records, diff_only=diff_only, agg=agg, by_group=by_group)
    except ValueError as exc:
        raise fail(str(exc))
    if as_json:
        sys.stdout.write(to_json(comparison) + "\n")
    else:
        out.print(render_rich(comparison))


@runs_app.command("export")
def runs_export(run_ids: Optional[List[str]] = typer.Argument(None, help="Runs to export (default: all)."),
                workspace: Optional[str] = WorkspaceOpt,
                fmt: str = typer.Option("csv", "--format", "-f", help="csv | json | md"),
                output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
    """Export runs (final metrics and settings; JSON includes the history)."""
    from kdtui.analysis.compare import export_runs

    if fmt not in ("csv", "json", "md"):
        raise fail(f"--format {fmt!r}: allowed: csv, json, md")
    ws, store = open_store(workspace)
    text = export_runs(_records_with_history(ws, store, run_ids or None), fmt)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)
        err.print(f"wrote {output}")


@runs_app.command("stop")
def runs_stop(run_id: str, workspace: Optional[str] = WorkspaceOpt) -> None:
    """Stop a run cleanly (its last checkpoint is kept; `runs resume` continues it)."""
    from kdtui.runs.service import RunService

    ws, store = open_store(workspace)
    record = _resolve(store, run_id)
    out.print(RunService(ws, store).stop(record).message)


@runs_app.command("resume")
def runs_resume(run_id: str, workspace: Optional[str] = WorkspaceOpt,
                detach: bool = typer.Option(False, "--detach", help="Resume in the background."),
                as_json: bool = JsonOpt) -> None:
    """Continue a stopped, interrupted or failed run from its last checkpoint."""
    ws, store = open_store(workspace)
    record = _resolve(store, run_id)
    from kdtui.runs.service import RunService, ServiceError

    service = RunService(ws, store)
    try:
        if detach:
            pids = service.resume_detached([record])
        else:
            service.requeue(record)
    except ServiceError as exc:
        raise fail(str(exc))
    if detach:
        out.print(f"{record['id']} resumed in the background ({_pids(pids)})")
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(_run_foreground(ws, store, [record["id"]], as_json, retrain=False))


@runs_app.command("rm")
def runs_rm(run_ids: List[str], workspace: Optional[str] = WorkspaceOpt,
            yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask.")) -> None:
    """Delete runs: their record and folder."""
    from kdtui.runs.service import RunService, ServiceError

    ws, store = open_store(workspace)
    records = [_resolve(store, i) for i in run_ids]
    service = RunService(ws, store)
    active = [r["id"] for r in records if r["status"] in ACTIVE_STATUSES]
    if active:
        raise fail(f"{', '.join(active)} still active; stop first (kdtui runs stop ID)")
    if not yes:
        names = ", ".join(f"{r['id']} ({r['name']})" for r in records)
        if not sys.stdin.isatty():
            raise fail(f"refusing to delete {names} without --yes (no terminal to ask)")
        if not typer.confirm(f"Delete {names}?"):
            raise typer.Exit(EXIT_OK)
    try:
        outcomes = service.remove(records)
    except ServiceError as exc:
        raise fail(str(exc))
    for outcome in outcomes:
        out.print(outcome.message)


@app.command("queue")
def queue_show(workspace: Optional[str] = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """The device slots (who holds each) and the runs waiting for one, first in line first."""
    from kdtui.core.procs import pid_alive
    from kdtui.runs.executors.slots import QueueError, RunQueue, plan_slots, read_slots_per_gpu, visible_gpus

    ws, store = open_store(workspace)
    try:
        per_gpu = read_slots_per_gpu(ws)
    except QueueError as exc:
        raise fail(str(exc))
    gpus = visible_gpus()
    holders = {r["slot"]: r for r in store.find(status="running") if r.get("slot")}
    waiting = [t for t in RunQueue(ws).tickets() if pid_alive(t.get("pid"))]
    names = {r["id"]: r.get("name") or "" for r in store.all()} if waiting else {}
    slots = [slot.name for pool, members in plan_slots(gpus, per_gpu).items()
             if pool != "cpu" or not gpus for slot in members]
    slots += sorted(set(holders) - set(slots))  # held under another --slots-per-gpu
    payload = {"slots_per_gpu": per_gpu, "gpus": gpus,
               "slots": [{"slot": name, "run": (holders.get(name) or {}).get("id")} for name in slots],
               "waiting": [{"run": t["run"], "name": names.get(t["run"], ""), "pools": t.get("pools"),
                            "enqueued": t["enqueued"]} for t in waiting]}
    if as_json:
        print_json(payload)
        return
    where = f"GPUs {', '.join(gpus)}" if gpus else "no GPU: CPU slots"
    lines = [f"{per_gpu} slot(s) per device; {where}", ""]
    lines += _plain_table([("slot", "<"), ("run", "<"), ("name", "<"), ("since", ">")],
                          [[name, (holders.get(name) or {}).get("id", "free"),
                            str((holders.get(name) or {}).get("name") or ""),
                            _age((holders.get(name) or {}).get("started")) if name in holders else ""]
                           for name in slots], squeeze=2).splitlines()
    lines += ["", f"waiting: {len(waiting)}"]
    if waiting:
        lines += _plain_table([("#", ">"), ("run", "<"), ("name", "<"), ("waiting", ">")],
                              [[str(i + 1), t["run"], names.get(t["run"], ""), _age(t["enqueued"])]
                               for i, t in enumerate(waiting)], squeeze=2).splitlines()
    sys.stdout.write("\n".join(lines) + "\n")


presets_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                          help="The paper's experiments as ready-made specs.")
app.add_typer(presets_app, name="presets")


@presets_app.command("list")
def presets_list(as_json: bool = JsonOpt) -> None:
    """Each preset: id, title, what it varies, and its number of runs at each scale."""
    from kdtui.core.presets import SCALES, list_presets

    rows = [{"id": p.id, "title": p.title, "varies": p.header("tiny").get("varies", p.varies),
             "runs": {scale: p.run_count(scale) for scale in SCALES}} for p in list_presets()]
    if as_json:
        print_json(rows)
        return
    width = shutil.get_terminal_size((100, 24)).columns
    lines = [f"{'id':<8}{'runs paper/tiny':>16}  title"]
    for r in rows:
        lines.append(_clip(f"{r['id']:<8}{r['runs']['paper']:>10} / {r['runs']['tiny']:<3}  {r['title']}", width))
        lines.append(_clip(f"{'':<8}varies: {r['varies']}", width))
    lines.append("\nkdtui presets show ID [--scale paper|tiny] prints a preset's spec, with its sweep")
    sys.stdout.write("\n".join(lines) + "\n")


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


@presets_app.command("show")
def presets_show(preset_id: str = typer.Argument(..., metavar="ID"),
                 scale: str = typer.Option("tiny", "--scale", help="paper or tiny.")) -> None:
    """Print a preset's spec (TOML, with its [sweep]): copy it, edit it, run it."""
    from kdtui.core.presets import PresetError, preset_text

    try:
        sys.stdout.write(preset_text(preset_id, scale))
    except PresetError as exc:
        raise fail(str(exc))


@app.command()
def report(run_ids: Optional[List[str]] = typer.Argument(None, metavar="[IDS]...", help="Runs to report."),
           preset: Optional[str] = typer.Option(None, "--preset", help="The finished runs of a preset."),
           scale: Optional[str] = typer.Option(None, "--scale", help="With --preset: paper or tiny."),
           group: Optional[str] = typer.Option(None, "--group", help="A seed group (group hash prefix)."),
           workspace: Optional[str] = WorkspaceOpt) -> None:
    """Figures (PNG) and a mean ± std table (Markdown) in <workspace>/reports/<name>/."""
    from kdtui.analysis.report import report_for

    try:
        index = report_for(workspace, preset=preset, scale=scale, group=group, run_ids=run_ids or None)
    except (ValueError, RegistryError) as exc:
        raise fail(str(exc).splitlines()[0])
    out.print(f"report: {index}")


@app.command()
def doctor(workspace: Optional[str] = WorkspaceOpt) -> None:
    """What matters on a remote box: torch and CUDA, the terminal's colours, the workspace."""
    from kdtui.doctor import doctor_report, render_report

    out.print(render_report(doctor_report(workspace)))


@app.command()
def serve(workspace: Optional[str] = WorkspaceOpt,
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
          port: str = typer.Option("8000", "--port", help="TCP port.")) -> None:
    """Serve the terminal app to a browser (textual-serve); reach it through `ssh -L`."""
    from kdtui.serve import ServeUnavailable, serve as serve_app

    if not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(f"--port {port!r}: must be a number between 1 and 65535")
    try:
        serve_app(workspace, host=host, port=int(port), echo=lambda line: err.print(line, markup=False))
    except ServeUnavailable as exc:
        raise fail(str(exc))


def _usage_exceptions():
    """click's exception classes, wherever this typer keeps them (recent typer vendors click)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    exceptions = _usage_exceptions()
    try:
        code = app(standalone_mode=False)
    except exceptions.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `kdtui runs`: the group's help
            exc.show()
            sys.exit(exc.exit_code)
        # A mistyped option or argument: one line, like every other bad input.
        where = exc.ctx.command_path if exc.ctx is not None else "kdtui"
        err.print(f"error: {exc.format_message()} (see: {where} --help)", markup=False, highlight=False,
                  soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    except exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
