"""The `kdtui` command line: run specs, and find, compare and export runs from the shell.

Exit codes (PRODUCT.md): 0 success, 1 run failed, 2 bad input, 130 interrupted. Nothing here
imports torch at module level: only `run` and `runs resume` pay for it, inside the runner.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from kdtui import eventlog
from kdtui.registry import RegistryError, RunStore, record_with_history
from kdtui.spec import SpecError
from kdtui.workspace import Workspace

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(add_completion=False, no_args_is_help=False, invoke_without_command=True,
                  help="kdtui: a terminal experiment manager for knowledge distillation.")
runs_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, follow, compare and export runs.")
app.add_typer(runs_app, name="runs")

out = Console()
err = Console(stderr=True)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder (default: $KDTUI_HOME or ./runs).")
JsonOpt = typer.Option(False, "--json", help="Print JSON only on stdout.")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def open_store(workspace: Optional[str]) -> tuple[Workspace, RunStore]:
    ws = Workspace(workspace)
    return ws, RunStore(ws)


def print_json(payload) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@app.callback()
def main_callback(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


@app.command()
def run(spec_path: Path = typer.Argument(..., metavar="SPEC.toml", help="The experiment spec."),
        workspace: Optional[str] = WorkspaceOpt,
        device: Optional[str] = typer.Option(None, help="Override the spec's device (auto, cpu, cuda, cuda:N)."),
        as_json: bool = JsonOpt,
        detach: bool = typer.Option(False, "--detach", help="Run in the background and return at once."),
        retrain_teachers: bool = typer.Option(False, "--retrain-teachers", help="Train teachers even if stored.")) -> None:
    """Run an experiment spec (every point of its [sweep] grid)."""
    from kdtui.spec import expand_sweep, load_spec, spec_from_dict

    try:
        spec = load_spec(spec_path)
        if device is not None:
            spec = spec_from_dict({**spec.model_dump(mode="json", exclude_none=True), "device": device},
                                  source="--device")
        points = [point.resolved() for point in expand_sweep(spec, source=str(spec_path))]
    except SpecError as exc:
        raise fail(str(exc))
    ws, store = open_store(workspace)
    from kdtui.runner import create_run
    run_ids = [create_run(ws, store, point) for point in points]

    if detach:
        from kdtui.launcher import launch_detached
        pid = launch_detached(ws, store, run_ids, retrain_teachers=retrain_teachers)
        if as_json:
            print_json([store.get(run_id) for run_id in run_ids])
        else:
            for run_id in run_ids:
                out.print(run_id)
            err.print(f"started in the background (pid {pid}); follow with: kdtui runs tail {run_ids[0]}")
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(_run_foreground(ws, store, run_ids, as_json, retrain_teachers))


def _run_foreground(ws: Workspace, store: RunStore, run_ids: list[str], as_json: bool, retrain: bool) -> int:
    from kdtui.progress import RunProgress, summary_table
    from kdtui.runner import execute

    console = err if as_json else out
    records, code = [], EXIT_OK
    for position, run_id in enumerate(run_ids):
        with RunProgress(console, run_id) as progress:
            record = execute(ws, store, run_id, retrain_teachers=retrain, on_event=progress)
        records.append(record)
        if record["status"] == "stopped":
            for later in run_ids[position + 1:]:  # Ctrl-C ends the sweep; the rest stay resumable
                store.update(later, status="stopped")
            code = EXIT_INTERRUPTED
            break
        if record["status"] != "done":
            code = EXIT_FAILED
    if as_json:
        print_json(records[0] if len(run_ids) == 1 else records)
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
    table = Table(show_lines=False)
    for column in ("id", "name", "status", "train agr", "test agr", "test acc", "group", "age"):
        table.add_column(column, justify="right" if column.endswith(("agr", "acc")) else "left")
    for r in records:
        m = r.get("metrics") or {}
        table.add_row(r["id"], r["name"], r["status"], _fmt(m.get("train_agreement")), _fmt(m.get("test_agreement")),
                      _fmt(m.get("test_acc")), (r.get("group_hash") or "")[:8], _age(r.get("created")))
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: str, workspace: Optional[str] = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Show one run: its record and per-epoch history."""
    ws, store = open_store(workspace)
    record = record_with_history(store, ws, _resolve(store, run_id)["id"])
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
        names = [k for k in history[-1] if k != "epoch"]
        table = Table(title="history")
        table.add_column("epoch", justify="right")
        for n in names:
            table.add_column(n, justify="right")
        for row in history:
            table.add_row(str(row["epoch"]), *(_fmt(row.get(n)) for n in names))
        out.print(table)
    out.print(f"folder: {ws.run_dir(record['id'])}")


@runs_app.command("tail")
def runs_tail(run_id: str, workspace: Optional[str] = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Follow a run's events until it ends."""
    from kdtui.progress import describe_epoch
    from kdtui.registry import pid_alive

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


def _records_with_history(ws: Workspace, store: RunStore, ids: list[str]) -> list[dict]:
    return [record_with_history(store, ws, _resolve(store, i)["id"]) for i in ids]


@runs_app.command("compare")
def runs_compare(run_ids: List[str] = typer.Argument(..., help="Two or more run ids (unique prefixes work)."),
                 workspace: Optional[str] = WorkspaceOpt,
                 diff_only: bool = typer.Option(False, "--diff-only", help="Hide settings equal in every run."),
                 agg: str = typer.Option("last", help="last | best | min | max, per metric."),
                 by_group: bool = typer.Option(False, "--by-group", help="Mean ± std across seeds per group."),
                 as_json: bool = JsonOpt) -> None:
    """Compare runs side by side: settings, then metrics."""
    from kdtui.compare import compare, render_rich, to_json

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
    from kdtui.compare import export_runs

    if fmt not in ("csv", "json", "md"):
        raise fail(f"--format {fmt!r}: allowed: csv, json, md")
    ws, store = open_store(workspace)
    ids = run_ids or [r["id"] for r in store.all()]
    text = export_runs(_records_with_history(ws, store, ids), fmt)
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
    from kdtui.runner import request_stop

    ws, store = open_store(workspace)
    record = _resolve(store, run_id)
    message = request_stop(ws, store, record)
    out.print(message)


@runs_app.command("resume")
def runs_resume(run_id: str, workspace: Optional[str] = WorkspaceOpt,
                detach: bool = typer.Option(False, "--detach", help="Resume in the background."),
                as_json: bool = JsonOpt) -> None:
    """Continue a stopped, interrupted or failed run from its last checkpoint."""
    ws, store = open_store(workspace)
    record = _resolve(store, run_id)
    if record["status"] not in ("stopped", "interrupted", "failed"):
        raise fail(f"run {record['id']} is {record['status']}; only stopped, interrupted or failed runs resume")
    store.update(record["id"], status="queued", error=None)
    if detach:
        from kdtui.launcher import launch_detached
        pid = launch_detached(ws, store, [record["id"]])
        out.print(f"{record['id']} resumed in the background (pid {pid})")
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(_run_foreground(ws, store, [record["id"]], as_json, retrain=False))


@runs_app.command("rm")
def runs_rm(run_ids: List[str], workspace: Optional[str] = WorkspaceOpt,
            yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask.")) -> None:
    """Delete runs: their record and folder."""
    ws, store = open_store(workspace)
    records = [_resolve(store, i) for i in run_ids]
    active = [r["id"] for r in records if r["status"] in ("running", "queued")]
    if active:
        raise fail(f"{', '.join(active)} still active; stop first (kdtui runs stop ID)")
    if not yes:
        names = ", ".join(f"{r['id']} ({r['name']})" for r in records)
        if not sys.stdin.isatty():
            raise fail(f"refusing to delete {names} without --yes (no terminal to ask)")
        if not typer.confirm(f"Delete {names}?"):
            raise typer.Exit(EXIT_OK)
    for r in records:
        store.remove(r["id"])
        shutil.rmtree(ws.run_dir(r["id"]), ignore_errors=True)
        out.print(f"deleted {r['id']}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
