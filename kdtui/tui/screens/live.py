"""The live screen: one run's curves, per-epoch table, phase and log; follows it while it runs."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, RichLog, Static

from kdtui.tui.state import ACTIVE, EPOCH_COLUMNS, LOG_LINES, SHORT_NAMES
from kdtui.tui.widgets.curves import Curves


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


class LiveScreen(Screen):
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("e", "edit_copy", "Edit copy"),
        Binding("m", "mark", "Mark"),
    ]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self._version = -1
        self._log_shown = 0
        self._row_keys: set[str] = set()
        self._columns: list[str] = []
        self._head: Text | None = None
        self._error = ""
        self._bar: tuple[float, float] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="live-head"):
            yield Static("", id="live-info")
            yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="live-progress")
        yield Static("", id="live-error", classes="hidden")
        with Horizontal(id="live-plots"):
            yield Curves("agreement (train, test)", y_range=(0.0, 1.0), id="plot-agreement")
            with Vertical(id="live-side-plots"):
                yield Curves("test accuracy", y_range=(0.0, 1.0), id="plot-acc")
                yield Curves("test KL (nats)", id="plot-kl")
        with Horizontal(id="live-bottom"):
            yield DataTable(id="live-epochs", cursor_type="row", zebra_stripes=True)
            yield RichLog(id="live-log", max_lines=LOG_LINES, wrap=False, markup=False, highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.app.live_state(self.run_id)
        self.app.streamer.want(self.run_id, "live")
        self.query_one("#live-epochs", DataTable).focus()
        self.update_view(force=True)

    def on_unmount(self) -> None:
        self.app.streamer.unwant(self.run_id, "live")

    def on_screen_resume(self) -> None:
        self.update_view(force=True)

    def on_data(self, records_changed: bool, live_ids: set[str]) -> None:
        if records_changed or self.run_id in live_ids:
            self.update_view()

    # -- drawing ------------------------------------------------------------------------------

    @property
    def record(self) -> dict:
        return self.app.by_id.get(self.run_id) or {"id": self.run_id, "name": "", "status": "unknown"}

    def update_view(self, force: bool = False) -> None:
        record = self.record
        live = self.app.live_state(self.run_id)
        status = record.get("status", "")
        head = Text()
        head.append(f"{record.get('name', '')} ", style="bold")
        head.append(f"{self.run_id} ")
        head.append(status, style={"failed": "bold red", "done": "green", "running": "bold cyan"}.get(status, ""))
        phase = live.phase_text()
        if phase:
            epochs = (live.phase or {}).get("epochs") or 0
            head.append(f"  {phase} epoch {live.epoch}/{epochs}")
        done, total = live.fraction()
        if status == "done" or total <= 0:
            done, total = 1.0, 1.0
        head.append(f"  {100 * done / total:3.0f}%")
        info = self.query_one("#live-info", Static)
        if head != self._head:  # fixed size: no layout pass (that would redraw the plots too)
            self._head = head
            info.update(head, layout=False)
        done, total = live.fraction()
        if status == "done":
            done, total = 1.0, 1.0
        if (done, total) != self._bar:
            self._bar = (done, total)
            self.query_one("#live-progress", ProgressBar).update(total=total, progress=done)
        error = record.get("error") or ((live.final or {}).get("error") if (live.final or {}).get("type") == "failed" else None)
        box = self.query_one("#live-error", Static)
        message = f"failed: {error or 'no error recorded'}" if status == "failed" or error else ""
        if message != self._error:
            self._error = message
            box.update(Text(message, style="bold red"))
            box.set_class(not message, "hidden")
        if force or live.version != self._version:
            self._version = live.version
            self._draw_curves(live)
            self._draw_table(live)
        self._draw_log(live)

    def _draw_curves(self, live) -> None:
        self.query_one("#plot-agreement", Curves).set_series([
            ("train", *live.series("train_agreement")), ("test", *live.series("test_agreement"))])
        self.query_one("#plot-acc", Curves).set_series([("test acc", *live.series("test_acc"))])
        self.query_one("#plot-kl", Curves).set_series([("test kl", *live.series("test_kl"))])

    def _draw_table(self, live) -> None:
        table = self.query_one("#live-epochs", DataTable)
        rows = list(live.rows.values())
        present = [m for m in EPOCH_COLUMNS if any(m in row for row in rows)]
        if present != self._columns[2:] and present:
            table.clear(columns=True)
            self._row_keys.clear()
            self._columns = ["phase", "epoch", *present]
            table.add_column("phase", key="phase")
            table.add_column("ep", key="epoch")
            for metric in present:
                table.add_column(SHORT_NAMES.get(metric, metric), key=metric)
        at_end = table.cursor_row >= table.row_count - 1
        for row in rows:
            key = f"{row['phase']}-{row['index']}-{row['epoch']}"
            if key in self._row_keys:
                continue
            self._row_keys.add(key)
            phase = f"T{row['index'] + 1}" if row["phase"] == "teacher" else "S"
            table.add_row(phase, str(row["epoch"]), *(_fmt(row.get(m)) for m in self._columns[2:]), key=key)
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)

    def _draw_log(self, live) -> None:
        new = live.log_total - self._log_shown
        if new <= 0:
            return
        lines = list(live.log)[-new:] if new < len(live.log) else list(live.log)
        log = self.query_one("#live-log", RichLog)
        for line in lines:
            log.write(Text(line, style="bold red" if "FAILED" in line else ""))
        self._log_shown = live.log_total

    # -- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_stop(self) -> None:
        if self.record.get("status") in ACTIVE:
            self.app.stop_runs([self.run_id])
        else:
            self.notify(f"{self.run_id} is {self.record.get('status')}", severity="warning")

    def action_resume(self) -> None:
        self.app.resume_runs([self.run_id])

    def action_edit_copy(self) -> None:
        self.app.open_editor(f"run:{self.run_id}")

    def action_mark(self) -> None:
        marked = self.app.marked
        if self.run_id in marked:
            marked.remove(self.run_id)
            self.notify(f"unmarked {self.run_id}")
        else:
            marked.append(self.run_id)
            self.notify(f"marked {self.run_id} ({len(marked)} marked; c on the runs screen compares)")
