"""The runs screen: every run of the workspace, with live progress, time left and its latest
agreement; marks, sorting, filter; stop, resume, delete and compare act on the marked runs (or
the run under the cursor)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from kdtui.analysis.filters import FilterError, Selection, matches, parse_selection
from kdtui.analysis.labels import point_label, short_id
from kdtui.core.ages import age_text
from kdtui.core.events import DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, STOPPED
from kdtui.core.names import printable
from kdtui.core.vocabulary import metric_label
from kdtui.tui.text import literal, plain
from kdtui.tui.state import ACTIVE, progress_cell, record_metric, time_cell
from kdtui.tui.widgets.gpus import GpuStatus
from kdtui.tui.widgets.tables import RowTable


class RunsTable(RowTable):
    def action_scroll_bottom(self) -> None:
        self.screen.fill_rows(len(self.screen.visible_ids))  # End: the last run, not the last row added
        super().action_scroll_bottom()

STATUS_STYLE = {RUNNING: "bold cyan", QUEUED: "cyan", DONE: "green", FAILED: "bold red",
                STOPPED: "yellow", INTERRUPTED: "magenta"}
# (key, header, content width, right-aligned); `name` takes the width that is left.
COLUMNS = (("status", "status", 12, False), ("name", "name", 0, False), ("id", "id", 18, False),
           ("progress", "progress", 9, False), ("train", metric_label("train_agreement"), 9, True),
           ("test", metric_label("test_agreement"), 8, True), ("acc", metric_label("test_acc"), 8, True),
           ("time", "time ~left", 12, True), ("age", "age", 4, True))
SHORT_ID_WIDTH = 4
# Narrow terminals give up, in this order, until the name has NAME_WANT characters (a sweep
# point's `digits-temp · τ=8.0 seed=1` at 80 columns): the full id (for its random suffix, which
# every command accepts), the train agreement (the test agreement is the one to read), the age,
# the accuracy.
NAME_WANT, NAME_MIN, NAME_MAX = 26, 8, 48
DROP_ORDER = ("id", "train", "age", "acc")
AGE_REFRESH_S = 10.0
CLOCK_REFRESH_S = 1.0
# The table holds the rows down to ROWS_AHEAD past the cursor or the view's bottom, and gains more
# as either nears its end: a DataTable measures every cell it holds, which at 10,000 runs kept the
# app busy for seconds after its first screenful and on every refresh of the ages.
ROWS_AHEAD = 100
SORT_KEYS = tuple(key for key, *_ in COLUMNS)


@dataclass
class SpecsRead(Message):
    specs: dict[str, dict]


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def layout_columns(width: int) -> tuple[list[tuple[str, str, int, bool]], int]:
    """The columns that fit `width` (the id cut to its suffix first), and the name's width."""
    columns = list(COLUMNS)

    def name_width() -> int:
        return width - 3 - sum(w + 1 for key, _, w, _ in columns if key != "name")

    for give_up in DROP_ORDER:
        if name_width() >= NAME_WANT:
            break
        if give_up == "id":
            columns = [(k, h, SHORT_ID_WIDTH if k == "id" else w, r) for k, h, w, r in columns]
        else:
            columns = [c for c in columns if c[0] != give_up]
    return columns, max(NAME_MIN, min(NAME_MAX, name_width()))


def _sort_value(key: str, record: dict, live) -> tuple:
    """A sort key that puts missing values last, whatever the direction."""
    if key in ("train", "test", "acc"):
        metric = {"train": "train_agreement", "test": "test_agreement", "acc": "test_acc"}[key]
        value = record_metric(record, live, metric)
    elif key == "progress":
        value = live.fraction()[0] / max(live.fraction()[1], 1.0) if live is not None and live.phase else None
    elif key == "age":
        created = record.get("created")
        value = -created if isinstance(created, (int, float)) else None  # youngest first, as by default
    elif key == "time":
        started, finished = record.get("started"), record.get("finished")
        value = (finished or time.time()) - started if isinstance(started, (int, float)) else None
    else:
        value = str(record.get(key) or "")
    return (value is None, value if value is not None else 0)


def _annotations(record: dict) -> str:
    """'#baseline #keep  best so far': a run's tags, then the first line of its note."""
    tags = " ".join(f"#{printable(tag)}" for tag in record.get("tags") or ())
    note = printable(str(record.get("note") or "").split("\n")[0])
    return "  ".join(part for part in (tags, note) if part)


def _name_cell(record: dict, width: int) -> Text:
    """' digits-temp · τ=8.0 seed=1  #baseline  best so far': a sweep point by its label (the base
    is cut, never the values), then its tags and note, dim, in the room the label leaves."""
    cell = Text(" " + point_label(printable(record.get("name", "")), width), no_wrap=True, overflow="ellipsis")
    extras = _annotations(record)
    if extras and cell.cell_len + 2 < width:
        cell.append("  " + extras, style="dim")
        cell.truncate(width + 1, overflow="ellipsis")
    return cell


class RunsScreen(Screen):
    """Runs newest first (or sorted by a column). Streams progress of running runs; the registry
    is watched for changes made by any process (the CLI's `kdtui run --detach` included)."""

    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("l", "launch", "Launch"),
        Binding("e", "edit_copy", "Edit copy", show=False),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume", show=False),
        Binding("space,m", "mark", "Mark"),
        Binding("u", "clear_marks", "Unmark all", show=False),
        Binding("c", "compare", "Compare"),
        Binding("d", "delete", "Delete", show=False),
        Binding("o", "sort", "Sort", show=False),
        Binding("O", "sort_reverse", "Reverse sort", show=False),
        Binding("v", "log", "Event log", show=False),
        Binding("w", "queue", "Queue", show=False),
        Binding("n", "note", "Note", show=False),
        Binding("t", "tags", "Tags", show=False),
        Binding("R", "rename", "Rename", show=False),
        Binding("y", "copy_id", "Copy id, show folder", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "escape", "Clear filter, then marks", show=False),
    ]
    # What help says beyond the keys (the marks are what stop, resume, delete and compare act on).
    HELP_NOTES = ("space (or m) marks the run under the cursor and moves down; u, or esc when no filter is "
                  "set, clears every mark. Stop, resume, delete and compare act on the marked runs if "
                  "any are marked and shown (a filter that hides them leaves them out), else on the run "
                  "under the cursor, and say how many they acted on. Marks stay until cleared, compare "
                  "included. The cursor stays on its run when rows re-sort or new runs come in. "
                  "A stopped run shows the metrics of the last epoch it finished (progress `S 3 last`). "
                  "n sets the highlighted run's note, t changes its tags (+baseline -old), R renames it "
                  "(the id, spec and group stay); the name column shows them after the name (#tag, then "
                  "the note) where there is room, the bar below the table the highlighted run's in full, "
                  "and the filter finds them (tag:baseline, words of a "
                  "note); an empty note clears it. y copies the run's id (where the terminal takes OSC 52) "
                  "and shows it with the run's folder, to select by hand. "
                  "o sorts by the next column, O reverses; "
                  "a click on a column's header sorts by it; the sort is kept in the workspace's "
                  "settings.toml for the next start. home and end go to the first and the last "
                  "run; the table takes in rows as you move down, so end at thousands of runs takes a "
                  "few seconds (/ or a sort finds an old run faster).")
    keep_current = True

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.selection: Selection | None = Selection()  # None: the filter cannot be read (the bar says why)
        self.filter_error = ""
        self._specs: dict[str, dict] = {}  # run id -> its spec, read for `key=value` terms (specs never change)
        self.sort_key: str | None = None      # None: newest first
        self.sort_reverse = False
        self._ids: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._drawn_from: dict[str, dict] = {}  # the record each row was last drawn from
        self._layout: tuple | None = None
        self._columns: list[tuple[str, str, int, bool]] = []
        self._shown_headers: dict[str, str] = {}
        self._name_width = NAME_MIN
        self._id_width = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStatus()  # each GPU's use and memory; hidden without GPUs or nvidia-ml-py
        table = RunsTable(id="runs-table", cursor_type="row", zebra_stripes=False, cell_padding=0)
        yield table
        with Horizontal(id="runs-bar"):
            yield Static("", id="runs-summary")
        yield Input(placeholder="filter: words, τ=4 seed=1, status:done, tag:x (enter keeps it, esc clears)",
                    id="runs-filter", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        from kdtui.tui.settings import read_sort

        # The sort of the last session (one small file: read before the first frame, not re-sorted after it).
        self.sort_key, self.sort_reverse = read_sort(self.app.workspace, SORT_KEYS)
        table = self.query_one(DataTable)
        table.focus()
        self.watch(table, "scroll_y", lambda y: self.fill_rows(int(y) + table.size.height), init=False)
        self.set_interval(AGE_REFRESH_S, self._refresh_ages)
        self.set_interval(CLOCK_REFRESH_S, self._refresh_clocks)
        self.rebuild()

    def on_screen_resume(self) -> None:
        self.rebuild()

    def on_resize(self) -> None:
        if layout_columns(self.size.width) != self._layout:
            self.rebuild()

    # -- data -----------------------------------------------------------------------------------

    def visible_records(self) -> list[dict]:
        records = [r for r in reversed(self.app.records) if self._keeps(r)]  # newest first
        if self.sort_key is not None:
            live = self.app.live
            records.sort(key=lambda r: _sort_value(self.sort_key, r, live.get(r["id"])))
            if self.sort_reverse:
                present = [r for r in records if not _sort_value(self.sort_key, r, live.get(r["id"]))[0]]
                records = present[::-1] + records[len(present):]
        return records

    def _row(self, record: dict, now: float) -> tuple:
        live = self.app.live.get(record["id"])
        status = str(record.get("status", ""))
        mark = "*" if record["id"] in self.app.marked else " "
        run_id = str(record.get("id", ""))
        cells = {
            "status": Text(f" {mark}{status}", style=STATUS_STYLE.get(status, ""), no_wrap=True, overflow="ellipsis"),
            "name": None,
            "id": Text(" " + (run_id if self._id_width >= len(run_id) else short_id(run_id)), no_wrap=True),
            "progress": Text(" " + progress_cell(record, live), no_wrap=True),
            "train": Text(_num(record_metric(record, live, "train_agreement")), justify="right"),
            "test": Text(_num(record_metric(record, live, "test_agreement")), justify="right"),
            "acc": Text(_num(record_metric(record, live, "test_acc")), justify="right"),
            "time": Text(time_cell(record, live, now), justify="right", no_wrap=True, overflow="ellipsis"),
            "age": Text(age_text(record.get("created"), now), justify="right"),
        }
        cells["name"] = _name_cell(record, self._name_width - 1)
        return tuple(cells[key] for key, *_ in self._columns)

    @staticmethod
    def _plain(row: tuple) -> tuple:
        return tuple((cell.plain, str(cell.style)) for cell in row)

    def rebuild(self) -> None:
        """Rebuild the whole table (columns sized to the screen), keeping the cursor on its run.

        Only the rows down to the cursor's run and ROWS_AHEAD beyond go in now (`fill_rows`), so a
        workspace of thousands of runs shows (and takes keys) at once."""
        table = self.query_one(DataTable)
        current = self.current_id()
        records = self.visible_records()
        layout = layout_columns(self.size.width or self.app.size.width)
        headers = self._headers()
        table.clear(columns=layout != self._layout or not table.columns or headers != self._shown_headers)
        if not table.columns:
            self._layout = layout
            self._columns, self._name_width = layout[0], layout[1]
            self._id_width = next((w for k, _, w, _ in self._columns if k == "id"), 0)
            self._shown_headers = headers
            for key, _, w, right in self._columns:
                w = self._name_width if key == "name" else w
                label = Text(headers[key], justify="right") if right else Text(" " + headers[key])
                table.add_column(label, width=w + 1, key=key)
        self._ids = [r["id"] for r in records]
        self._cells, self._drawn_from = {}, {}
        at = self._ids.index(current) if current in self._ids else 0
        self.fill_rows(at)
        if current in self._cells:
            table.move_cursor(row=at, animate=False)
        self._update_summary()

    def _headers(self) -> dict[str, str]:
        """Column headers; the sorted column says which way (▲ ascending, ▼ descending)."""
        headers = {key: header for key, header, *_ in COLUMNS}
        if self.sort_key is not None:
            arrow = "▼" if self.sort_reverse else "▲"
            headers[self.sort_key] = f"{headers[self.sort_key]}{arrow}"
        return headers

    @property
    def visible_ids(self) -> list[str]:
        """The runs the table lists (filtered and sorted), whether or not their rows are in yet."""
        return self._ids

    def fill_rows(self, index: int) -> None:
        """Add rows so that the table holds the run at `index` and ROWS_AHEAD more (or all)."""
        end = min(index + ROWS_AHEAD, len(self._ids))
        start = len(self._cells)
        if start >= end:
            return
        table = self.query_one(DataTable)
        by_id = self.app.by_id
        now = time.time()
        for run_id in self._ids[start:end]:
            row = self._row(by_id[run_id], now)
            self._cells[run_id], self._drawn_from[run_id] = self._plain(row), by_id[run_id]
            table.add_row(*row, key=run_id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.fill_rows(event.cursor_row)
        self._update_summary()  # the highlighted run's tags and note

    @property
    def complete(self) -> bool:
        """The table holds every row it needs now: all the runs, or ROWS_AHEAD past the cursor and
        the view (more go in as they near the end)."""
        table = self.query_one(DataTable)
        return len(self._cells) >= min(len(self._ids), max(table.cursor_row, 0) + ROWS_AHEAD)

    def _keeps(self, record: dict) -> bool:
        """The filter (kdtui.analysis.filters, as `runs list --where`): a `key=value` term reads the
        run's spec, which the index rows lack; a run whose spec is not read yet is left out."""
        if self.selection is None:
            return True
        if self.selection.needs_spec:
            spec = self._specs.get(record["id"])
            if spec is None:
                return False
            record = {**record, "spec": spec}
        return matches(record, self.selection)

    def _read_specs(self) -> None:
        """Read, in a worker thread, the specs of the runs a `key=value` term needs and not read yet."""
        missing = [r for r in self.app.records if r["id"] not in self._specs]
        if not (missing and self.selection and self.selection.needs_spec):
            return
        workspace = self.app.workspace

        def work() -> None:
            from kdtui.core.registry import RunStore

            whole = RunStore(workspace).with_details(missing)
            self.post_message(SpecsRead({r["id"]: r.get("spec") or {} for r in whole}))
        self.run_worker(work, thread=True, group="runs-specs", exclusive=True, exit_on_error=False)

    def on_specs_read(self, message: SpecsRead) -> None:
        self._specs.update(message.specs)
        self.rebuild()

    def on_data(self, records_changed: bool, live_ids: set[str]) -> None:
        if records_changed:
            self._read_specs()
            ids = [r["id"] for r in self.visible_records()]
            if ids != self._ids:
                self.rebuild()
                return
            # Only the rows whose record changed: after End at 10,000 runs, redrawing every row on
            # each registry change took a second.
            by_id = self.app.by_id
            self._update_rows([i for i, drawn in self._drawn_from.items() if by_id.get(i) != drawn])
            self._update_summary()
        elif live_ids:
            self._update_rows([i for i in live_ids if i in self._cells])

    def _update_rows(self, run_ids) -> None:
        table = self.query_one(DataTable)
        by_id = self.app.by_id
        now = time.time()
        for run_id in run_ids:
            record = by_id.get(run_id)
            if record is None or run_id not in self._cells:
                continue  # gone, or its row is not in the table yet
            row = self._row(record, now)
            plain = self._plain(row)
            old = self._cells.get(run_id)
            self._drawn_from[run_id] = record
            if plain == old:
                continue
            self._cells[run_id] = plain
            for (key, *_), cell, before, after in zip(self._columns, row, old, plain):
                if before != after:
                    table.update_cell(run_id, key, cell)

    def _refresh_ages(self) -> None:
        """Ages move on: the rows in view and ROWS_AHEAD either side. A row further away keeps its
        age until a later tick finds it near the view (after End at 10,000 runs, redrawing every
        row every AGE_REFRESH_S took a second each time)."""
        table = self.query_one(DataTable)
        top = max(int(table.scroll_y) - ROWS_AHEAD, 0)
        bottom = int(table.scroll_y) + table.size.height + ROWS_AHEAD
        self._update_rows(self._ids[top:min(bottom, len(self._cells))])

    def _refresh_clocks(self) -> None:
        """Elapsed time and ETA move on between events (and queued runs' ages with them). A run
        whose events keep coming has its row redrawn with them already: only the quiet ones here."""
        by_id, live, quiet = self.app.by_id, self.app.live, time.time() - 2 * CLOCK_REFRESH_S
        self._update_rows([i for i in self._cells if (by_id.get(i) or {}).get("status") in ACTIVE
                           and ((live.get(i) and live[i].last_t) or 0) < quiet])

    def _update_summary(self) -> None:
        records = self.app.records
        active = sum(1 for r in records if r.get("status") in ACTIVE)
        parts = [f"{len(records)} run{'' if len(records) == 1 else 's'}", f"{active} active"]
        if self.app.marked:
            parts.append(f"{len(self.app.marked)} marked (u or esc clears)")
        if self.filter_error:
            parts.append(self.filter_error)
        elif self.filter_text:
            parts.append(f"filter '{self.filter_text}': {len(self._ids)} shown")
        if self.sort_key is not None:
            parts.append(f"sorted by {self._headers()[self.sort_key]}")
        if self.app.registry_error:
            parts = [self.app.registry_error]
        elif not self.app.loaded:
            parts = ["reading the registry…"]
        elif not records:
            parts.append("press l to launch one")
        else:
            # The highlighted run's tags and note in full (the name column has room for them only when wide).
            annotations = _annotations(self.app.by_id.get(self.current_id() or "") or {})
            if annotations:
                parts.append(annotations)
        self.query_one("#runs-summary", Static).update(plain(" · ".join(parts)), layout=False)

    # -- selection ------------------------------------------------------------------------------

    def current_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._ids or table.row_count == 0:
            return None
        row = min(max(table.cursor_row, 0), len(self._ids) - 1)
        return self._ids[row]

    def _targets(self) -> tuple[list[str], str]:
        """The marked runs in view (a run the filter hides is not visibly marked), else the run
        under the cursor; and which of the two it is."""
        shown = set(self._ids)
        marked = [i for i in self.app.marked if i in self.app.by_id and i in shown]
        if marked:
            return marked, "marked"
        current = self.current_id()
        return ([current] if current else []), "cursor"

    # -- actions --------------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, False
        self._sorted()

    def action_sort(self) -> None:
        """The next column (after the last one: back to newest first)."""
        shown = [key for key, *_ in self._columns]
        if self.sort_key is None:
            self.sort_key = shown[0]
        else:
            later = shown[shown.index(self.sort_key) + 1:] if self.sort_key in shown else []
            self.sort_key = later[0] if later else None
        self.sort_reverse = False
        self._sorted()

    def action_sort_reverse(self) -> None:
        self.sort_key = self.sort_key or "age"
        self.sort_reverse = not self.sort_reverse
        self._sorted()

    def _sorted(self) -> None:
        """Show the new sort, and keep it in the workspace's settings for the next start."""
        from kdtui.tui.messages import TaskDone
        from kdtui.tui.settings import write_sort

        self.rebuild()
        workspace, key, reverse = self.app.workspace, self.sort_key, self.sort_reverse

        def save() -> None:
            try:
                write_sort(workspace, key, reverse)
            except (OSError, ValueError) as exc:
                self.app.post_message(TaskDone(f"the sort is not kept for the next start: {exc}", "warning"))
        # One write at a time, the newest sort last (a thread each, as run_task, could land out of order).
        self.run_worker(save, thread=True, group="runs-sort", exclusive=True, exit_on_error=False)

    def action_open(self) -> None:
        run_id = self.current_id()
        if run_id:
            self.app.open_run(run_id)

    def action_log(self) -> None:
        run_id = self.current_id()
        if run_id:
            self.app.open_log(run_id)

    def action_queue(self) -> None:
        self.app.open_queue()

    def action_copy_id(self) -> None:
        run_id = self.current_id()
        if run_id:
            self.app.copy_run_id(run_id)

    def action_launch(self) -> None:
        self.app.open_editor()

    def action_edit_copy(self) -> None:
        run_id = self.current_id()
        self.app.open_editor(f"run:{run_id}" if run_id else None)

    def action_stop(self) -> None:
        targets, which = self._targets()
        active = [i for i in targets if self.app.by_id[i].get("status") in ACTIVE]
        if not active:
            if which == "marked":
                self.notify(f"none of the {len(targets)} marked runs is running or queued (u clears the marks)",
                            severity="warning", markup=False)
            else:
                self.notify("this run is not running or queued", severity="warning", markup=False)
            return
        self.app.stop_runs(active)

    def action_resume(self) -> None:
        targets, _ = self._targets()
        if targets:
            self.app.resume_runs(targets)

    def action_mark(self) -> None:
        run_id = self.current_id()
        if not run_id:
            return
        if run_id in self.app.marked:
            self.app.marked.remove(run_id)
        else:
            self.app.marked.append(run_id)
        self._update_rows([run_id])
        self._update_summary()
        table = self.query_one(DataTable)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1, animate=False)

    def action_clear_marks(self) -> None:
        if not self.app.marked:
            return
        count = len(self.app.marked)
        cleared = list(self.app.marked)
        self.app.marked.clear()
        self._update_rows(cleared)
        self._update_summary()
        self.notify(f"cleared {count} mark{'s' if count != 1 else ''}", markup=False)

    def action_compare(self) -> None:
        self.app.open_compare()

    def action_delete(self) -> None:
        from kdtui.tui.screens.modals import ConfirmScreen

        targets, _ = self._targets()
        if not targets:
            return
        active = [i for i in targets if self.app.by_id[i].get("status") in ACTIVE]
        if active:
            self.notify(literal(f"{', '.join(active)} still active; stop first (s)"), severity="warning", markup=False)
            return
        names = ", ".join(f"{i} ({point_label(printable(self.app.by_id[i].get('name', '')))})" for i in targets[:5])
        more = f" and {len(targets) - 5} more" if len(targets) > 5 else ""
        what = "this run" if len(targets) == 1 else f"these {len(targets)} runs"
        question = f"Delete {what}: {names}{more}?\nTheir records and folders (checkpoints, events) are removed."

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.delete_runs(targets)
        self.app.push_screen(ConfirmScreen(question), answered)

    def action_note(self) -> None:
        self._annotate("note", "note of {} (empty clears it):", "note")

    def action_tags(self) -> None:
        self._annotate("tags", "tags of {} (now: {}): +add -remove", "tags")

    def action_rename(self) -> None:
        self._annotate("name", "rename {} (its id, spec and group stay):", "name")

    def _annotate(self, field: str, question: str, kind: str) -> None:
        """Ask for the highlighted run's note, tag changes or name, and store them as `kdtui runs
        note/tag/rename` do (RunService.annotate: record.json and the index)."""
        from kdtui.tui.messages import TaskDone
        from kdtui.tui.screens.modals import PromptScreen

        run_id = self.current_id()
        if not run_id:
            return
        record = self.app.by_id[run_id]
        label = f"{point_label(printable(record.get('name', '')))} {short_id(run_id)}"
        tags = " ".join(str(t) for t in record.get("tags") or ()) or "none"
        value = "" if field == "tags" else str(record.get(field) or "")

        def answered(text: str | None) -> None:
            if text is None:
                return

            def work() -> TaskDone:
                from kdtui.runs.service import ServiceError

                service = self.app.service()
                current = service.store.get(run_id)
                if current is None:
                    return TaskDone(f"{run_id}: gone", "warning")
                try:
                    outcome = service.annotate(current, **{field: text.split() if field == "tags" else text})
                except ServiceError as exc:
                    return TaskDone(str(exc), "warning")
                return TaskDone(outcome.message, run_ids=[run_id])
            self.app.run_task(kind, work)
        self.app.push_screen(PromptScreen(question.format(label, tags), value, allow_empty=field == "note"), answered)

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.remove_class("hidden")
        box.value = self.filter_text
        box.focus()

    def action_escape(self) -> None:
        """Esc clears the filter if one is set, else the marks."""
        if self.filter_text or not self.query_one("#runs-filter", Input).has_class("hidden"):
            self.action_clear_filter()
        else:
            self.action_clear_marks()

    def action_clear_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("hidden")
        if self.filter_text:
            self.set_filter("")
        self.query_one(DataTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "runs-filter":
            self.set_filter(event.value.strip())

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        try:
            self.selection, self.filter_error = parse_selection(text), ""
        except FilterError as exc:
            self.selection, self.filter_error = None, str(exc)
        self._read_specs()
        self.rebuild()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "runs-filter":
            if not self.filter_text:
                event.input.add_class("hidden")
            self.query_one(DataTable).focus()

    def on_key(self, event) -> None:
        # esc in the filter box clears it (the screen's binding does not see keys the Input eats)
        if event.key == "escape" and self.focused is self.query_one("#runs-filter", Input):
            event.stop()
            self.action_clear_filter()

    def on_task_done_here(self, message) -> None:
        if message.kind == "delete":
            self.app.marked[:] = [i for i in self.app.marked if i not in message.run_ids]
            self._update_summary()
