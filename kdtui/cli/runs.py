"""`kdtui runs ...`: find, follow, compare, export, stop, resume and delete runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from kdtui.analysis.compare import AGGREGATIONS, EXPORT_FORMATS
from kdtui.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    JsonOption,
    WorkspaceOption,
    display_ids,
    err,
    fail,
    finish,
    fmt_number,
    gone_folders_text,
    noun,
    notice_gone_folders,
    open_store,
    out,
    pids_text,
    plain_table,
    print_json,
    resolve,
    resolve_all,
    show_help_without_command,
)
from kdtui.core.ages import age_text
from kdtui.core.events import ACTIVE_STATUSES, DONE, QUEUED, STATUSES
from kdtui.core.names import printable
from kdtui.core.procs import make_ctrl_c_live
from kdtui.core.record import shown_metrics
from kdtui.core.vocabulary import metric_label, metric_order, teacher_label
from kdtui.core.workspace import Workspace, is_run_id_prefix

if TYPE_CHECKING:
    from kdtui.core.registry import RunStore


app = noun(name="runs", help="Find, follow, compare and export runs.", invoke_without_command=True,
           callback=show_help_without_command)

RunId = Annotated[str, typer.Argument(help="A run id or a unique prefix of one.", show_default=False)]
RunIds = Annotated[list[str], typer.Argument(help="Run ids or unique prefixes.", show_default=False)]
SomeRunIds = Annotated[Optional[list[str]], typer.Argument(help="Run ids or unique prefixes.", show_default=False)]


@app.command("list")
def runs_list(
    workspace: WorkspaceOption = None,
    status: Annotated[Optional[Literal[STATUSES]], typer.Option(help="Only runs with this status.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Only runs whose name contains this.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Only runs in this seed group (hash prefix).")] = None,
    where: Annotated[Optional[str], typer.Option(
        metavar="TERMS",
        help="Only runs these terms select: spec values (τ=4 seed=1 loss=reverse-kl), status:running, "
             "tag:baseline, and words found in the name, id, note or tags (all must hold).")] = None,
    full_ids: Annotated[bool, typer.Option(
        "--full-ids", help="Show whole run ids (default: the short id, which every command takes).")] = False,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest last."""
    from kdtui.analysis.filters import FilterError, parse_selection, select

    try:
        selection = parse_selection(where)
    except FilterError as exc:
        raise fail(f"--where: {exc}")
    ws, store = open_store(workspace)
    settle_stale(store)
    try:
        records = select(store, selection, store.find(status=status, name=name, group=group))
    except FilterError as exc:  # a key no run's spec has
        raise fail(f"--where: {exc}")
    _notice_unlisted_folders(ws, store)
    if as_json:
        print_json(store.with_details(records))  # the whole records, as every --json prints them
        return
    ids = [r["id"] for r in records]
    if not full_ids:
        everyone = records if status is None and name is None and group is None and not where else store.all()
        ids = display_ids(ids, [r["id"] for r in everyone])
    # A stopped run shows its last finished epoch's metrics, its status saying which epoch.
    shown = [(m, None) if (m := r.get("metrics")) else shown_metrics(r) for r in records]  # the common case first
    listed = ("train_agreement", "test_agreement", "test_acc")
    sys.stdout.write(plain_table(
        [("id", "<"), ("name", "<"), ("status", "<"), *((metric_label(m), ">") for m in listed),
         ("group", "<"), ("age", ">")],
        [[run_id, printable(r.get("name")), str(r.get("status")) + (f" (epoch {epoch})" if epoch is not None else ""),
          *(fmt_number(m.get(k)) for k in listed), (r.get("group_hash") or "")[:8], age_text(r.get("created"))]
         for run_id, r, (m, epoch) in zip(ids, records, shown)],
        squeeze=1))


def settle_stale(store: RunStore) -> None:
    """Settle the runs whose process is gone (kdtui.core.lifecycle.reconcile) before statuses are
    shown or acted on: reading the registry never does it. A registry that cannot be written now
    (read-only, locked too long) is one line on stderr, and the command goes on with what it reads."""
    from kdtui.core import lifecycle
    from kdtui.core.registry import RegistryBusy

    try:
        lifecycle.reconcile(store)
    except (OSError, RegistryBusy) as exc:
        err.print(f"could not settle runs whose process is gone: {exc}", markup=False, highlight=False,
                  soft_wrap=True)


def _notice_unlisted_folders(ws: Workspace, store: RunStore) -> None:
    """On stderr: run folders the registry does not list. The listing is still right for what the
    registry holds, so this is a notice, not an error."""
    from kdtui.core.registry import RECORD_NAME

    unlisted = store.unregistered_run_folders()
    recoverable = [name for name in unlisted if (ws.run_dir(name) / RECORD_NAME).is_file()]
    lost = [name for name in unlisted if name not in set(recoverable)]
    if recoverable:
        n = len(recoverable)
        err.print(f"{n} run folder{'s are' if n != 1 else ' is'} not in the registry: run `kdtui runs reindex`",
                  markup=False, highlight=False, soft_wrap=True)
    if lost:  # reindex cannot list these: it rebuilds from record.json, and they have none
        n = len(lost)
        err.print(f"{n} run folder{'s have' if n != 1 else ' has'} no {RECORD_NAME} and cannot be listed "
                  f"({', '.join(lost[:3])}{', ...' if n > 3 else ''}): delete them, or run their spec.toml again",
                  markup=False, highlight=False, soft_wrap=True)


@app.command("reindex")
def runs_reindex(workspace: WorkspaceOption = None) -> None:
    """Rebuild the registry from the run folders (each holds its own record.json)."""
    _, store = open_store(workspace)
    out.print(store.reindex().describe(), markup=False, highlight=False, soft_wrap=True)
    settle_stale(store)


HISTORY_COLUMNS = ("train_agreement", "train_agreement_eval", "test_agreement", "test_acc", "test_kl", "train_loss")


def config_lines(spec: dict | None) -> list[str]:
    """The run's resolved spec, every key, one line per section: `distill: loss=kl temperature=4
    ...` (the record holds the spec as it ran, dataset defaults filled in)."""
    from kdtui.analysis.flat import flatten_spec

    sections: dict[str, list[str]] = {}
    for key, value in flatten_spec(spec).items():
        section, _, leaf = key.rpartition(".")
        shown = "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        sections.setdefault(section or "run", []).append(f"{leaf}={printable(shown)}")
    return [f"{section}: {' '.join(items)}" for section, items in sections.items()]


def environment_lines(environment: dict | None, width: int = 96) -> list[str]:
    """The record's `environment` block (where its numbers came from) as `key=value` items, as many
    to a line as fit in `width`; none for a record from before the block existed."""
    lines: list[str] = []
    for key, value in (environment or {}).items():
        item = f"{key}={printable('—' if value is None else str(value))}"
        if lines and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        else:
            lines.append(item)
    return lines


@app.command("show")
def runs_show(run_id: RunId, workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Show one run: its record and per-epoch history."""
    from kdtui.core.registry import record_with_history

    ws, store = open_store(workspace)
    record = record_with_history(store, ws, resolve(store, run_id)["id"])
    notice_gone_folders(ws, [record["id"]])
    if as_json:
        print_json(record)
        return
    from kdtui.cli.progress import summary_table
    out.print(summary_table(record))
    out.print(f"id: {record['id']}", markup=False)
    for key in ("status", "device", "host", "pid", "spec_hash", "group_hash"):
        out.print(f"{key}: {printable(record.get(key))}", markup=False)
    if record.get("tags"):
        out.print(f"tags: {printable(' '.join(record['tags']))}", markup=False, highlight=False)
    if record.get("note"):
        out.print(f"note: {printable(record['note'])}", markup=False, highlight=False, soft_wrap=True)
    if record.get("peak_memory_bytes"):
        out.print(f"peak memory: {record['peak_memory_bytes'] / 2**20:.0f} MiB ({record.get('peak_memory_kind')})",
                  markup=False)
    for teacher in record.get("teachers") or []:
        out.print(f"{teacher_label(teacher.get('member') or 0)}: {teacher.get('key', '')[:12]} "
                  f"{'reused' if teacher.get('reused') else 'trained'}, "
                  f"{metric_label('test_acc')} {fmt_number(teacher.get('test_acc'))}", markup=False)
    out.print("config (resolved):", markup=False)
    for line in config_lines(record.get("spec")):
        out.print(f"  {line}", markup=False)
    env_lines = environment_lines(record.get("environment"))
    if env_lines:
        out.print("environment:", markup=False)
        for line in env_lines:
            out.print(f"  {line}", markup=False, soft_wrap=True)
    history = record["history"]
    if history:
        from rich.table import Table

        from rich import box

        # The headline curves only (every metric is in --json and export), in the vocabulary's
        # order, without column rules: fits 80 columns with a loss of any size.
        shown = [n for n in metric_order(HISTORY_COLUMNS) if any(n in row for row in history)]
        table = Table(title="history", box=box.SIMPLE_HEAD)
        table.add_column("epoch", justify="right", no_wrap=True)
        for name in shown:
            table.add_column(metric_label(name), justify="right", no_wrap=True)
        for row in history:
            table.add_row(str(row["epoch"]), *(fmt_number(row.get(n)) for n in shown))
        out.print(table)
    out.print(f"folder: {ws.run_dir(record['id'])}", markup=False)


def _annotate(workspace: Path | None, run_id: str, **change) -> None:
    """Store a note, tags or a name on one run (RunService.annotate) and say what it holds now."""
    from kdtui.runs.service import RunService, ServiceError

    ws, store = open_store(workspace)
    record = resolve(store, run_id)
    try:
        outcome = RunService(ws, store).annotate(record, **change)
    except ServiceError as exc:
        raise fail(str(exc))
    out.print(printable(outcome.message), markup=False, highlight=False, soft_wrap=True)


@app.command("note")
def runs_note(run_id: RunId, text: str,
              workspace: WorkspaceOption = None) -> None:
    """Set a run's note ("" clears it); `runs show`, compare and exports show it, the filter searches it."""
    _annotate(workspace, run_id, note=text)


@app.command("tag", context_settings={"ignore_unknown_options": True})
def runs_tag(run_id: RunId, changes: list[str],
             workspace: WorkspaceOption = None) -> None:
    """Add (+baseline, or baseline) and remove (-old) a run's tags; `tag:baseline` filters by one.
    (A tag to remove that starts with -w: give it after `--`, as in `runs tag ID -- -wip`.)"""
    _annotate(workspace, run_id, tags=list(changes))


@app.command("rename")
def runs_rename(run_id: RunId, name: str,
                workspace: WorkspaceOption = None) -> None:
    """Rename a run; its id, spec, hashes and group stay as they are."""
    _annotate(workspace, run_id, name=name)


@app.command("tail")
def runs_tail(run_id: RunId, workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Follow a run's events until it ends."""
    from kdtui.core import eventlog
    from kdtui.core.events import Progress
    import socket

    from kdtui.core.procs import pid_alive
    from kdtui.core.runstate import describe

    ws, store = open_store(workspace)
    record = resolve(store, run_id)
    gone = gone_folders_text(ws, [record["id"]])
    if gone is not None:  # nothing to follow
        raise fail(gone)

    def process_gone() -> bool:
        current = store.get(record["id"]) or {}
        if current.get("status") == QUEUED and current.get("pid") is None:
            return False  # waiting in the queue's line: no process yet, a worker will start it
        if current.get("host") not in (None, socket.gethostname()):
            return current.get("status") not in ACTIVE_STATUSES  # a process elsewhere (a Slurm node): its record tells
        return current.get("status") not in ACTIVE_STATUSES or not pid_alive(current.get("pid"))

    seen = 0
    try:
        for event in eventlog.follow(ws.events_path(record["id"]), stop=process_gone):
            seen += 1
            if as_json:
                sys.stdout.write(json.dumps(event.to_dict()) + "\n")
                sys.stdout.flush()
            elif not isinstance(event, Progress):  # steps are the progress display's, not the tail's
                out.print(printable(describe(event, timed=True)), markup=False, highlight=False)
    except KeyboardInterrupt:
        raise finish(EXIT_INTERRUPTED)
    final = store.get(record["id"]) or {}
    if not seen and final.get("started") is None and final.get("status") not in ACTIVE_STATUSES:
        # Stopped (or ended) while it waited in the queue: it has no events, and the tail says why.
        err.print(f"run {record['id']} is {final.get('status')}: it never started, so it has no events "
                  f"(kdtui runs resume {record['id']} runs it)", markup=False, highlight=False, soft_wrap=True)
    raise finish(EXIT_OK if final.get("status") == DONE else EXIT_FAILED)


def _records_with_history(ws: Workspace, store: RunStore, ids: list[str] | None) -> list[dict]:
    from kdtui.core.registry import record_with_history

    records = store.all() if ids is None else resolve_all(store, ids)
    notice_gone_folders(ws, [r["id"] for r in records])
    return [record_with_history(store, ws, r["id"]) for r in records]


@app.command("compare")
def runs_compare(
    run_ids: RunIds,
    workspace: WorkspaceOption = None,
    all_keys: Annotated[bool, typer.Option("--all-keys", help="Show every setting, also those equal in every run.")] = False,
    diff_only: Annotated[bool, typer.Option("--diff-only", hidden=True)] = False,  # the default now; older scripts give it
    agg: Annotated[Literal[AGGREGATIONS], typer.Option(help="Per metric.")] = "last",
    by_group: Annotated[bool, typer.Option("--by-group", help="Mean ± std across seeds per group.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare runs side by side (two or more ids; unique prefixes work): the settings that differ
    (--all-keys: every one), then metrics."""
    from kdtui.analysis.compare import compare, render_rich, to_json

    if all_keys and diff_only:
        raise fail("--all-keys and --diff-only contradict each other (diff-only is the default)")
    ws, store = open_store(workspace)
    records = _records_with_history(ws, store, list(run_ids))
    try:
        comparison = compare(records, diff_only=not all_keys, agg=agg, by_group=by_group)
    except ValueError as exc:
        raise fail(str(exc))
    if as_json:
        sys.stdout.write(to_json(comparison, ascii_only=True) + "\n")
    else:
        out.print(render_rich(comparison))


@app.command("export")
def runs_export(
    run_ids: SomeRunIds = None,
    workspace: WorkspaceOption = None,
    fmt: Annotated[Literal[EXPORT_FORMATS], typer.Option("--format", "-f")] = "csv",
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", dir_okay=False,
        help="Write a regular file here instead of stdout (replaced whole). A symbolic link is refused, not "
             "followed; so are a FIFO, a device, a folder and a workspace's own files.")] = None,
    all_keys: Annotated[bool, typer.Option(
        "--all-keys", help="csv and md: every setting and whole ids, hashes and epoch times (default: short ids, "
                           "ISO times and only the settings that differ between the runs).")] = False,
) -> None:
    """Export runs, all by default (final metrics and settings; JSON includes the history)."""
    from kdtui.analysis.compare import export_runs
    from kdtui.core.files import OutputRefused, atomic_write, check_output

    ws, store = open_store(workspace)
    # On stdout JSON escapes what is not ASCII (a terminal may be reading); a file keeps UTF-8.
    text = export_runs(_records_with_history(ws, store, list(run_ids or ()) or None), fmt, ascii_json=output is None,
                       all_keys=all_keys)
    if not text.endswith("\n"):
        text += "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        check_output(output)
        atomic_write(output, text)
    except OutputRefused as exc:
        raise fail(str(exc))
    except OSError as exc:  # no such folder, no permission, a full disk: say which file
        raise fail(f"cannot write {output}: {exc.strerror or exc}")
    err.print(f"wrote {output}", markup=False)


@app.command("stop")
def runs_stop(
    run_ids: SomeRunIds = None,
    workspace: WorkspaceOption = None,
    group: Annotated[Optional[str], typer.Option(
        help="Every queued or running run of this seed group (hash prefix).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every queued and running run in the workspace.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --all: do not ask.")] = False,
) -> None:
    """Stop runs cleanly (IDs, --group G or --all); each keeps its last checkpoint (`runs resume`)."""
    from kdtui.runs.service import RunService

    if sum((bool(run_ids), group is not None, every)) != 1:
        raise fail("give run ids, --group G or --all (one of them)")
    ws, store = open_store(workspace)
    settle_stale(store)  # act on statuses as they are: a run whose process died is interrupted
    if run_ids:
        records = resolve_all(store, list(run_ids))
    else:
        records = store.find(status=ACTIVE_STATUSES, group=group)
        if not records:
            out.print("no queued or running runs" + (f" in group {group}" if group else ""), markup=False)
            return
    if every and not yes:
        _confirm(f"Stop {len(records)} queued or running run(s)?", f"refusing to stop {len(records)} run(s)")
    service = RunService(ws, store)
    outcomes = service.stop_many(records)
    # Plain lines, escaped: a rich print costs ~1 ms a line, seconds for a 5,000-point sweep.
    sys.stdout.write("".join(printable(outcome.message) + "\n" for outcome in outcomes))
    out.print(f"{sum(o.changed for o in outcomes)} of {len(outcomes)} run(s) stopped or asked to stop", markup=False)


def _confirm(question: str, refusal: str) -> None:
    """Ask on the terminal; without one (a script, a pipe) refuse unless --yes was given."""
    if not sys.stdin.isatty():
        raise fail(f"{refusal} without --yes (no terminal to ask)")
    if not typer.confirm(question):
        raise finish(EXIT_OK)


@app.command("resume")
def runs_resume(run_id: RunId, workspace: WorkspaceOption = None,
                detach: Annotated[bool, typer.Option("--detach", help="Resume in the background.")] = False,
                as_json: JsonOption = False) -> None:
    """Continue a stopped, interrupted or failed run from its last checkpoint."""
    from kdtui.cli.run import run_foreground
    from kdtui.runs.service import RunService, ServiceError

    ws, store = open_store(workspace)
    settle_stale(store)  # act on statuses as they are: a run whose process died is interrupted
    record = resolve(store, run_id)
    service = RunService(ws, store)
    make_ctrl_c_live()  # from here on a Ctrl-C stops the resumed run
    try:
        if detach:
            pids = service.resume_detached([record])
        else:
            service.requeue(record)
    except ServiceError as exc:
        raise fail(str(exc))
    if detach:
        out.print(f"{record['id']} resumed in the background ({pids_text(pids)})", markup=False)
        raise finish(EXIT_OK)
    raise finish(run_foreground(ws, store, [record["id"]], as_json, retrain=False))


@app.command("rm")
def runs_rm(run_ids: RunIds, workspace: WorkspaceOption = None,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Delete runs: their record and folder."""
    from kdtui.runs.service import RunService, ServiceError

    # Every id is checked before anything is read or removed: an id becomes a folder to delete.
    bad = [run_id for run_id in run_ids if not is_run_id_prefix(run_id)]
    if bad:
        raise fail(f"not a run id: {printable(repr(bad[0]))} (run ids look like YYMMDD-HHMMSS-xxxx; a prefix works)")
    ws, store = open_store(workspace)
    settle_stale(store)  # act on statuses as they are: a run whose process died is interrupted
    records = resolve_all(store, list(run_ids))
    active = [r["id"] for r in records if r["status"] in ACTIVE_STATUSES]
    if active:
        raise fail(f"{', '.join(active)} still active; stop first (kdtui runs stop ID)")
    if not yes:
        names = ", ".join(f"{r['id']} ({printable(r['name'])})" for r in records)
        _confirm(f"Delete {names}?", f"refusing to delete {names}")
    try:
        outcomes = RunService(ws, store).remove(records)
    except ServiceError as exc:
        raise fail(str(exc))
    for outcome in outcomes:
        out.print(outcome.message, markup=False)
