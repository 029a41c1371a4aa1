"""The log screen of one run: its event log (one line per event; the `progress` ticks, most of the
file, shown only after `p`) and, for a failed run, the traceback in `error.txt`; scrollable, and
searchable with `/` (n: next)."""
from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from kdtui.analysis.labels import point_label, short_id
from kdtui.core.events import BadEvent, Progress, parse
from kdtui.core.names import printable
from kdtui.core.runstate import describe
from kdtui.tui.text import literal, plain
from kdtui.tui.widgets.gpus import GpuStatus
from kdtui.tui.widgets.tables import RowTable

ERROR_FILE = "error.txt"


@dataclass
class LogRead(Message):
    lines: list[str]
    error: str = ""


def log_lines(workspace, run_id: str, progress: bool = True) -> list[str]:
    """Every event as a line (a progress event as its step, unless not `progress`), then
    error.txt's traceback."""
    lines = []
    path = workspace.events_path(run_id)
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                try:
                    event = parse(raw)
                    if not progress and isinstance(event, Progress):
                        continue
                    line = describe(event, timed=True)
                except BadEvent:  # shown as it is in the file
                    line = raw.rstrip("\n")
                lines.append(printable(line))
    error = workspace.run_dir(run_id) / ERROR_FILE
    if error.exists():
        lines += ["", f"--- {ERROR_FILE} ---", *map(printable, error.read_text(errors="replace").splitlines())]
    return lines


class LogScreen(Screen):
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match", "Next match"),
        Binding("p", "toggle_progress", "Progress lines"),
    ]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.lines: list[str] = []
        self.needle = ""
        self.show_progress = False  # the progress ticks are most of the file and say little

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStatus()  # hidden without GPUs or nvidia-ml-py
        yield Static(plain(f"event log of {self.title_text()}"), id="log-info")
        yield RowTable(id="log-lines", cursor_type="row", show_header=False, zebra_stripes=False)
        yield Input(placeholder="search (enter finds, n next, esc closes)", id="log-search", classes="hidden")
        yield Footer()

    def title_text(self) -> str:
        """The run by its label and short id (`digits-temp · τ=8.0 seed=1 b09d`), as the runs table names it."""
        name = (self.app.by_id.get(self.run_id) or {}).get("name") or ""
        return f"{point_label(printable(name))} {short_id(self.run_id)}".strip()

    def on_mount(self) -> None:
        table = self.query_one(RowTable)
        table.add_column("line", key="line")
        table.focus()
        self.read()

    def read(self) -> None:
        workspace, run_id, progress = self.app.workspace, self.run_id, self.show_progress

        def work() -> None:
            try:
                self.post_message(LogRead(log_lines(workspace, run_id, progress)))
            except OSError as exc:
                self.post_message(LogRead([], f"cannot read the log: {exc.strerror or exc}"))
        self.run_worker(work, thread=True, group="log-read", exclusive=True, exit_on_error=False)

    def on_log_read(self, message: LogRead) -> None:
        if message.error:
            self.query_one("#log-info", Static).update(plain(message.error, style="bold red"))
            return
        self.lines = message.lines
        table = self.query_one(RowTable)
        table.clear()
        for line in self.lines:
            table.add_row(plain(line, style="bold red" if "FAILED" in line or line.startswith("Traceback") else ""))
        self.query_one("#log-info", Static).update(
            plain(f"event log of {self.title_text()}: {len(self.lines)} lines · "
                  f"p {'hides' if self.show_progress else 'shows'} progress · / search"))
        if self.lines:
            table.move_cursor(row=len(self.lines) - 1, animate=False)

    def action_toggle_progress(self) -> None:
        self.show_progress = not self.show_progress
        self.read()

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.remove_class("hidden")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.needle = event.value.strip().lower()
        self.query_one("#log-search", Input).add_class("hidden")
        self.query_one(RowTable).focus()
        self.action_next_match(start_over=True)

    def action_next_match(self, start_over: bool = False) -> None:
        if not self.needle or not self.lines:
            return
        table = self.query_one(RowTable)
        start = 0 if start_over else table.cursor_row + 1
        order = list(range(start, len(self.lines))) + list(range(0, start))
        for row in order:
            if self.needle in self.lines[row].lower():
                table.move_cursor(row=row, animate=True)
                return
        self.notify(literal(f"'{self.needle}' not found"), severity="warning", markup=False)

    def on_key(self, event) -> None:
        if event.key == "escape" and self.focused is self.query_one("#log-search", Input):
            event.stop()
            self.action_back()

    def action_back(self) -> None:
        box = self.query_one("#log-search", Input)
        if not box.has_class("hidden"):
            box.add_class("hidden")
            self.query_one(RowTable).focus()
            return
        self.app.pop_screen()
