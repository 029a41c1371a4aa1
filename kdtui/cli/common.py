"""What every command module shares: exit codes, the output consoles, one-line errors, JSON output,
the typer app of a noun, the lazy group, the `--workspace` and `--json` options, and the small text
formatters of the tables."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from typer.core import TyperGroup

from kdtui.core.names import is_printable, printable
from kdtui.core.workspace import ENV_VAR, Workspace, WorkspaceError

if TYPE_CHECKING:
    from kdtui.core.registry import RunStore

# The registry (TinyDB) and the event log are imported where a command uses them, not here: every
# command module imports this one, and `kdtui --help` loads them all.

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
MISSING = "—"


class _LazyConsole:
    """A rich Console made on first use: importing rich.console costs ~0.1 s that `runs list`,
    the JSON commands and `--help` never need.

    Text printed here is never markup (the consoles are made with markup=False, so a name such as
    `[link=...]x` is shown as typed, in table cells too), and every string given to `print` is
    passed through `printable`, so no control sequence in a name, path or error reaches the
    terminal. Tables and Text built elsewhere escape their own cells (`cell`)."""

    def __init__(self, **options):
        self._options = options
        self._console = None

    def get(self):
        """The rich Console itself (for rich's own machinery: Progress, Live)."""
        if self._console is None:
            from rich.console import Console
            self._console = Console(**self._options)
        return self._console

    def print(self, *objects, **options) -> None:
        self.get().print(*(printable(o, lines=True) if isinstance(o, str) else o for o in objects), **options)

    def __getattr__(self, name):
        return getattr(self.get(), name)


out = _LazyConsole(highlight=False, markup=False)  # ids and paths are not numbers to colour
err = _LazyConsole(stderr=True, highlight=False, markup=False)


def cell(value) -> "Text":
    """A rich table cell (or title) showing `value` as it is: escaped, never markup."""
    from rich.text import Text

    return Text(printable(value))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line on stderr, `error: ...`, and return the exit to raise. The message is shown
    as text on one line (it often quotes a user's value: a path, a name, a sweep value)."""
    from rich.text import Text

    err.print(Text.assemble(("error:", "red"), " ", printable(message)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def os_error_text(exc: OSError) -> str:
    """An OSError as one line naming its file: `cannot use /w/kdtui.json: Read-only file system`."""
    from kdtui.core.files import TEMP_SUFFIX

    why = exc.strerror or str(exc)
    name = str(exc.filename) if exc.filename else ""
    if name.endswith(TEMP_SUFFIX):  # an atomic write's temporary file: the folder is what the user knows
        return f"cannot write in {Path(name).parent}: {why}"
    return f"cannot use {name}: {why}" if name else why


def finish(code: int) -> typer.Exit:
    """The exit to raise with a code other than 0 (or to end early with 0)."""
    return typer.Exit(code)


# Help is typer's plain formatter: no rich import (~0.1 s) on `--help`, and help text is shown as
# written (rich markup would eat `[sweep]` or `[IDS]`).
HELP_CONTEXT = {"help_option_names": ["-h", "--help"]}


def noun(**options) -> typer.Typer:
    """The typer app of one command module. Completion is offered once, by the root (`kdtui
    --install-completion`); a traceback is Python's own (typer's pretty one would hide the
    one-line errors' shape)."""
    return typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                       context_settings=HELP_CONTEXT, **options)


def show_help_without_command(ctx: typer.Context) -> None:
    """A noun given without a verb (`kdtui runs`) prints its help and exits 0."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


class LazyGroup(TyperGroup):
    """A TyperGroup that imports a command's module when that command is asked for, so `kdtui runs
    list` never imports `run`, `doctor` and the rest. `lazy` (set by a subclass) maps each name to
    "module:attribute", a typer app, in the order `--help` lists them; `summaries` gives each listed
    command's line in `--help` (the first line of its own help, which a test holds it to), so the
    listing imports no command module."""

    lazy: dict[str, str] = {}
    summaries: dict[str, str] = {}

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        rows = [(name, self.summaries[name]) for name in self.lazy if name in self.summaries]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return super().list_commands(ctx) + [name for name in self.lazy if name not in self.commands]

    def get_command(self, ctx: typer.Context, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in self.lazy:
            import importlib

            module, _, attribute = self.lazy[cmd_name].partition(":")
            noun_app = getattr(importlib.import_module(module), attribute)
            self.add_command(typer.main.get_command(noun_app), cmd_name)
        return super().get_command(ctx, cmd_name)


# -- options ---------------------------------------------------------------------------------------

def _workspace_or_root(ctx: typer.Context, value: Path | None) -> Path | None:
    """`kdtui -w W runs list` and `kdtui runs list -w W` mean the same; the command's own wins."""
    if value is None and ctx.parent is not None:
        value = ctx.find_root().params.get("workspace")
    return value


WORKSPACE_HELP = f"Workspace folder (default: ${ENV_VAR} or ./runs)."

# A command's options, as typed parameters: `workspace: WorkspaceOption = None, as_json: JsonOption = False`.
WorkspaceOption = Annotated[Optional[Path], typer.Option("--workspace", "-w", file_okay=False,
                                                         callback=_workspace_or_root, help=WORKSPACE_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only on stdout.")]


def open_store(workspace: Path | str | None, create: bool = False) -> tuple[Workspace, RunStore]:
    """The workspace and its registry, or a one-line error. Only `kdtui run` passes create=True:
    a command that only reads never leaves a workspace folder behind."""
    from kdtui.core.registry import RunStore

    try:
        ws = Workspace(workspace, create=create)
    except WorkspaceError as exc:
        raise fail(str(exc))
    return ws, RunStore(ws)


def resolve(store: RunStore, prefix: str) -> dict:
    """The record a unique id prefix names, or a one-line error."""
    from kdtui.core.registry import RegistryError

    try:
        return store.resolve(prefix)
    except RegistryError as exc:
        raise fail(str(exc))


def resolve_all(store: RunStore, prefixes: list[str]) -> list[dict]:
    from kdtui.core.registry import RegistryError

    try:
        return store.resolve_all(prefixes)
    except RegistryError as exc:
        raise fail(str(exc))


def gone_folders_text(ws: Workspace, run_ids: list[str]) -> str | None:
    """One line naming the runs (of `run_ids`) whose folder is gone, or None: their records remain
    in the index, but their history, checkpoints and logs went with the folder."""
    gone = [run_id for run_id in run_ids if not ws.run_dir(run_id).is_dir()]
    if not gone:
        return None
    if len(gone) == 1:
        return (f"run {gone[0]}: its folder {ws.run_dir(gone[0])} is gone (its record remains; "
                f"`kdtui runs rm {gone[0]}` forgets it)")
    shown = ", ".join(gone[:5]) + (f", ... ({len(gone)} in all)" if len(gone) > 5 else "")
    return f"{len(gone)} runs' folders are gone: {shown} (their records remain; `kdtui runs rm ID` forgets one)"


def notice_gone_folders(ws: Workspace, run_ids: list[str]) -> None:
    """`gone_folders_text` on stderr, if any run's folder is gone."""
    text = gone_folders_text(ws, run_ids)
    if text is not None:
        err.print(text, markup=False, highlight=False, soft_wrap=True)


def display_ids(run_ids: list[str], every_id: list[str]) -> list[str]:
    """The short id (the random suffix, `b09d`) of each run, as the app shows it and every command
    takes it; the whole id where another run in the workspace has the same suffix (the short one
    would be ambiguous). `every_id`: the ids of every run in the workspace."""
    from collections import Counter

    from kdtui.analysis.labels import short_id

    counts = Counter(short_id(run_id) for run_id in every_id)
    heads = {run_id[:4] for run_id in every_id}  # an all-digit suffix may also start some id

    def unique(suffix: str) -> bool:
        return counts.get(suffix, 0) <= 1 and not any(head.startswith(suffix) for head in heads)

    return [short_id(run_id) if unique(short_id(run_id)) else run_id for run_id in run_ids]


def print_json(payload) -> None:
    """Strict JSON on stdout (NaN/inf become null, so jq and other tools can read it): indented
    on a terminal, compact when piped (like `gh --json`; the compact encoder is C, ~10x faster
    on a 1,000-run listing)."""
    indent = 2 if sys.stdout.isatty() else None
    try:
        text = json.dumps(payload, indent=indent, default=str, allow_nan=False)
    except ValueError:
        from kdtui.core import eventlog

        text = json.dumps(eventlog.sanitize(json.loads(json.dumps(payload, default=str))), indent=indent)
    sys.stdout.write(text + "\n")


# -- text ------------------------------------------------------------------------------------------

def fmt_number(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING


def _cell_len_function(texts: list[str]):
    """How many terminal cells a string takes: its length for ASCII (the usual listing, without
    importing rich's width tables), else rich's cell length (CJK and most emoji take two)."""
    if all(text.isascii() for text in texts):
        return len
    from rich.cells import cell_len

    return cell_len


def _fit(text: str, width: int, cell_len, cut) -> str:
    """`text` cut by `cut(text, characters)` to the most characters that take at most `width`
    cells (a character takes one or two)."""
    target, fitted = width, cut(text, width)
    while cell_len(fitted) > width and target > 0:
        target -= max(1, (cell_len(fitted) - width) // 2)
        fitted = cut(text, max(target, 0))
    return fitted if cell_len(fitted) <= width else ""


def plain_table(columns: list[tuple[str, str]], rows: list[list[str]], squeeze: int) -> str:
    """Aligned text columns, like `gh run list`: cheap for thousands of rows (a rich Table spends
    ~2 ms a row measuring and wrapping). Every cell is escaped (`printable`) and measured in
    terminal cells, so CJK and emoji line up. Column `squeeze` (a name) is cut to fit the terminal,
    keeping a sweep point's values (kdtui.analysis.labels.cut_name); the others (ids, statuses,
    numbers) are never cut."""
    from kdtui.analysis.labels import cut_name

    # One scan a row in the usual case (a clean row; `runs list` shows 10,000), a copy only when needed.
    joined = ["".join(row) for row in rows]
    rows = [row if is_printable(text) else [printable(cell) for cell in row] for row, text in zip(rows, joined)]
    cell_len = _cell_len_function(joined)  # escaping only makes text ASCII: the originals decide
    widths = [max([cell_len(name)] + [cell_len(row[i]) for row in rows]) for i, (name, _) in enumerate(columns)]
    width = shutil.get_terminal_size((100, 24)).columns
    gap = 2
    over = sum(widths) + gap * (len(widths) - 1) - width
    if over > 0:
        widths[squeeze] = max(cell_len(columns[squeeze][0]), widths[squeeze] - over)

    def line(cells: list[str]) -> str:
        parts = []
        for text, w, (_, align) in zip(cells, widths, columns):
            if cell_len(text) > w:
                text = _fit(text, w, cell_len, cut_name)
            if cell_len is not len:  # str.ljust counts characters; pad by cells instead
                w += len(text) - cell_len(text)
            parts.append(text.ljust(w) if align == "<" else text.rjust(w))
        return (" " * gap).join(parts).rstrip()

    return "\n".join([line([name for name, _ in columns])] + [line(row) for row in rows]) + "\n"


def clip(line: str, width: int) -> str:
    """`line` in at most `width` terminal cells, escaped, with `…` where it was cut."""
    line = printable(line)
    cell_len = _cell_len_function([line])
    if cell_len(line) <= width:
        return line
    return _fit(line, width - 1, cell_len, lambda text, w: text[:w]) + "…"


def pids_text(pids: list[int]) -> str:
    if not pids:  # every slot the runs need is busy: the workers holding them take the runs in turn
        return "no new worker: queued behind the busy ones"
    return f"pid {pids[0]}" if len(pids) == 1 else f"{len(pids)} workers, pids {pids[0]}…{pids[-1]}"
