"""The runs screen: every run of the workspace, with live progress and its latest agreement."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from kdtui.tui.state import ACTIVE, age_text, progress_cell, record_metric, run_matches

STATUS_STYLE = {"running": "bold cyan", "queued": "cyan", "done": "green", "failed": "bold red",
                "stopped": "yellow", "interrupted": "magenta"}
# (key, header, content width, right-aligned); `name` takes the width that is left.
COLUMNS = (("status", "status", 12, False), ("name", "name", 0, False), ("id", "id", 18, False),
           ("progress", "progress", 8, False), ("train", "train", 5, True), ("test", "test", 5, True),
           ("acc", "acc", 5, True), ("age", "age", 4, True))
NAME_MIN, NAME_MAX = 8, 48
AGE_REFRESH_S = 10.0
FIRST_ROWS, MORE_ROWS = 80, 100


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


class RunsScreen(Screen):
    """Runs newest first. Streams progress of running runs; the registry is watched for changes
    made by any process (the CLI's `kdtui run --detach` included)."""

    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("l", "launch", "Launch"),
        Binding("e", "edit_copy", "Edit copy", show=False),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume", show=False),
        Binding("space,m", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("d", "delete", "Delete", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    keep_current = True

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self._ids: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._name_width = 0
        self._generation = 0
        self._want_cursor: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=False, cell_padding=0)
        yield table
        with Horizontal(id="runs-bar"):
            yield Static("", id="runs-summary")
        yield Input(placeholder="filter: words in name, id or status (enter keeps it, esc clears)",
                    id="runs-filter", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.set_interval(AGE_REFRESH_S, self._refresh_ages)
        self.rebuild()

    def on_screen_resume(self) -> None:
        self.rebuild()

    def on_resize(self) -> None:
        if self._name_width_for(self.size.width) != self._name_width:
            self.rebuild()

    # -- data -----------------------------------------------------------------------------------

    def visible_records(self) -> list[dict]:
        records = reversed(self.app.records)  # newest first
        return [r for r in records if run_matches(r, self.filter_text)]

    def _name_width_for(self, width: int) -> int:
        fixed = sum(w + 1 for key, _, w, _ in COLUMNS if key != "name") + 1
        return max(NAME_MIN, min(NAME_MAX, width - 2 - fixed))

    def _row(self, record: dict) -> tuple:
        live = self.app.live.get(record["id"])
        status = str(record.get("status", ""))
        mark = "*" if record["id"] in self.app.marked else " "
        return (
            Text(f" {mark}{status}", style=STATUS_STYLE.get(status, ""), no_wrap=True, overflow="ellipsis"),
            Text(" " + str(record.get("name", "")), no_wrap=True, overflow="ellipsis"),
            Text(" " + str(record.get("id", "")), no_wrap=True),
            Text(" " + progress_cell(record, live), no_wrap=True),
            Text(_num(record_metric(record, live, "train_agreement")), justify="right"),
            Text(_num(record_metric(record, live, "test_agreement")), justify="right"),
            Text(_num(record_metric(record, live, "test_acc")), justify="right"),
            Text(age_text(record.get("created")), justify="right"),
        )

    @staticmethod
    def _plain(row: tuple) -> tuple:
        return tuple((cell.plain, str(cell.style)) for cell in row)

    def rebuild(self) -> None:
        """Rebuild the whole table (columns sized to the screen), keeping the cursor on its run.

        The first screenful of rows goes in at once and the rest in chunks after each refresh, so
        a workspace of thousands of runs shows (and takes keys) at once."""
        table = self.query_one(DataTable)
        current = self._want_cursor or self.current_id()
        records = self.visible_records()
        width = self._name_width_for(self.size.width or self.app.size.width)
        table.clear(columns=width != self._name_width or not table.columns)
        if not table.columns:
            self._name_width = width
            for key, header, w, right in COLUMNS:
                w = width if key == "name" else w
                label = Text(header, justify="right") if right else Text(" " + header)
                table.add_column(label, width=w + 1, key=key)
        self._generation += 1
        self._ids = [r["id"] for r in records]
        self._cells = {}
        self._want_cursor = current
        self._add_rows(self._generation, FIRST_ROWS)
        self._update_summary()

    def _add_rows(self, generation: int, count: int) -> None:
        if generation != self._generation:
            return  # a newer rebuild took over
        table = self.query_one(DataTable)
        start = len(self._cells)
        end = min(start + count, len(self._ids))
        by_id = self.app.by_id
        for run_id in self._ids[start:end]:
            row = self._row(by_id[run_id])
            self._cells[run_id] = self._plain(row)
            table.add_row(*row, key=run_id)
        if self._want_cursor in self._cells:
            table.move_cursor(row=self._ids.index(self._want_cursor), animate=False)
            self._want_cursor = None
        if end < len(self._ids):
            self.call_after_refresh(self._add_rows, generation, MORE_ROWS)
        else:
            self._want_cursor = None

    @property
    def complete(self) -> bool:
        """Every visible run has its row (the table fills in chunks)."""
        return len(self._cells) == len(self._ids)

    def on_data(self, records_changed: bool, live_ids: set[str]) -> None:
        if records_changed:
            ids = [r["id"] for r in self.visible_records()]
            if ids != self._ids:
                self.rebuild()
                return
            self._update_rows(list(self._cells))
            self._update_summary()
        elif live_ids:
            self._update_rows([i for i in live_ids if i in self._cells])

    def _update_rows(self, run_ids) -> None:
        table = self.query_one(DataTable)
        by_id = self.app.by_id
        for run_id in run_ids:
            record = by_id.get(run_id)
            if record is None or run_id not in self._cells:
                continue  # gone, or its row is not in the table yet
            row = self._row(record)
            plain = self._plain(row)
            old = self._cells.get(run_id)
            if plain == old:
                continue
            self._cells[run_id] = plain
            for (key, *_), cell, before, after in zip(COLUMNS, row, old, plain):
                if before != after:
                    table.update_cell(run_id, key, cell)

    def _refresh_ages(self) -> None:
        self._update_rows(list(self._cells))

    def _update_summary(self) -> None:
        records = self.app.records
        active = sum(1 for r in records if r.get("status") in ACTIVE)
        parts = [f"{len(records)} runs", f"{active} active"]
        if self.app.marked:
            parts.append(f"{len(self.app.marked)} marked")
        if self.filter_text:
            parts.append(f"filter '{self.filter_text}': {len(self._ids)} shown")
        if not self.app.loaded:
            parts = ["reading the registry…"]
        elif not records:
            parts.append("press l to launch one")
        self.query_one("#runs-summary", Static).update(" · ".join(parts), layout=False)

    # -- selection ------------------------------------------------------------------------------

    def current_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._ids or table.row_count == 0:
            return None
        row = min(max(table.cursor_row, 0), len(self._ids) - 1)
        return self._ids[row]

    def _targets(self) -> list[str]:
        """The marked runs, else the run under the cursor."""
        marked = [i for i in self.app.marked if i in self.app.by_id]
        if marked:
            return marked
        current = self.current_id()
        return [current] if current else []

    # -- actions --------------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        run_id = self.current_id()
        if run_id:
            self.app.open_run(run_id)

    def action_launch(self) -> None:
        self.app.open_editor()

    def action_edit_copy(self) -> None:
        run_id = self.current_id()
        self.app.open_editor(f"run:{run_id}" if run_id else None)

    def action_stop(self) -> None:
        targets = [i for i in self._targets() if self.app.by_id[i].get("status") in ACTIVE]
        if not targets:
            self.notify("no running or queued run selected", severity="warning")
            return
        self.app.stop_runs(targets)

    def action_resume(self) -> None:
        targets = self._targets()
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

    def action_compare(self) -> None:
        self.app.open_compare()

    def action_delete(self) -> None:
        from kdtui.tui.screens.modals import ConfirmScreen

        targets = self._targets()
        if not targets:
            return
        active = [i for i in targets if self.app.by_id[i].get("status") in ACTIVE]
        if active:
            self.notify(f"{', '.join(active)} still active; stop first (s)", severity="warning")
            return
        names = ", ".join(f"{i} ({self.app.by_id[i].get('name', '')})" for i in targets[:5])
        more = f" and {len(targets) - 5} more" if len(targets) > 5 else ""
        question = f"Delete {names}{more}?\nIts record and folder (checkpoints, events) are removed."

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.delete_runs(targets)
        self.app.push_screen(ConfirmScreen(question), answered)

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.remove_class("hidden")
        box.value = self.filter_text
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("hidden")
        if self.filter_text:
            self.filter_text = ""
            self.rebuild()
        self.query_one(DataTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "runs-filter":
            self.filter_text = event.value.strip()
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
