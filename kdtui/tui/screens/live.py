"""The live screen: one run's curves, latest metrics, per-epoch table, phase, time and log;
follows it while it runs.

On a short terminal (80×24) the two small charts (test accuracy, test KL) take turns beside the
agreement chart (`t` switches), so that no chart is squeezed below a readable height.
"""
from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, RichLog, Static

from kdtui.analysis.labels import point_label, short_id
from kdtui.core.events import DONE, FAILED, RUNNING, Failed
from kdtui.core.names import printable
from kdtui.core.timing import format_duration
from kdtui.core.vocabulary import metric_label, teacher_short
from kdtui.tui.state import ACTIVE, EPOCH_COLUMNS, LOG_LINES
from kdtui.tui.text import literal, plain
from kdtui.tui.widgets.curves import Curves
from kdtui.tui.widgets.gpus import GpuStatus
from kdtui.tui.widgets.tables import RowTable

# Below this many rows the screen is "compact": one side chart at a time, a shorter bottom. Both
# small charts (8 rows each) need 29: 13 go to the header, head, latest line, bottom and footer.
COMPACT_BELOW = 29
PROGRESS_WIDTH = 16  # the progress bar beside the head (kdtui.tcss #live-progress)
WIDE = 100   # narrower: the head shows the id's suffix and "ep", to leave room for the time
SIDE_CHARTS = ("plot-acc", "plot-kl")
LATEST = ("train_agreement", "test_agreement", "test_acc", "test_kl")
STATUS_STYLE = {FAILED: "bold red", DONE: "green", RUNNING: "bold cyan"}


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def teacher_accuracy(record: dict, live) -> float | None:
    """The teacher's test accuracy: the record's once the run is done, else the last teacher
    epoch's (the first member's, for an ensemble: the record has the ensemble's)."""
    value = (record.get("metrics") or {}).get("teacher_test_acc")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    _, ys = live.series("test_acc", phase="teacher")
    return ys[-1] if ys else None


class LiveScreen(Screen):
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume", show=False),
        Binding("e", "edit_copy", "Edit copy"),
        Binding("m", "mark", "Mark", show=False),
        Binding("t", "switch_chart", "Acc/KL"),
        Binding("v", "log", "Event log"),
        Binding("y", "copy_id", "Copy id, show folder", show=False),
    ]
    # What help says beyond the keys: the grey lines of the charts.
    HELP_NOTES = ("The grey lines are references, named at their right end: `1.0` on the agreement chart "
                  "(a student that agrees with the teacher on every example), `teacher acc` on the "
                  "accuracy chart (the teacher's test accuracy, what the student is measured against). "
                  "The header shows the phase, the epoch, the percent done, the time so far and the ETA. "
                  "t switches the small chart (accuracy or KL) where only one fits. e opens the editor on "
                  "a copy of this run's resolved spec: change a value and launch it as a new run. y copies "
                  "the run's id and shows its folder.")

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.side_chart = SIDE_CHARTS[0]   # the one shown when only one fits
        self._version = -1
        self._log_shown = 0
        self._row_keys: set[str] = set()
        self._columns: list[str] = []
        self._head: Text | None = None
        self._latest: Text | None = None
        self._error = ""
        self._bar: tuple[float, float] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStatus()  # hidden without GPUs or nvidia-ml-py
        with Horizontal(id="live-head"):
            yield Static("", id="live-info")
            yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="live-progress")
        yield Static("", id="live-latest")
        yield Static("", id="live-error", classes="hidden")
        with Horizontal(id="live-plots"):
            yield Curves(f"agreement ({metric_label('train_agreement')}, {metric_label('test_agreement')})",
                         y_range=(0.0, 1.02), id="plot-agreement")
            with Vertical(id="live-side-plots"):
                yield Curves(metric_label("test_acc"), y_range=(0.0, 1.02), id="plot-acc")
                yield Curves(f"{metric_label('test_kl')} (nats)", id="plot-kl")
        with Horizontal(id="live-bottom"):
            yield RowTable(id="live-epochs", cursor_type="row", zebra_stripes=True)
            yield RichLog(id="live-log", max_lines=LOG_LINES, wrap=False, markup=False, highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.app.live_state(self.run_id)
        self.app.streamer.want(self.run_id, "live")
        self.query_one("#live-epochs", DataTable).focus()
        self.set_interval(1.0, self._tick)
        self.watch(self.app, "gpu_line", self._fit, init=False)  # the GPU line shown or gone: fit again
        self._fit()
        self.update_view(force=True)

    def on_unmount(self) -> None:
        self.app.streamer.unwant(self.run_id, "live")

    def on_screen_resume(self) -> None:
        self._fit()
        self.update_view(force=True)

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        gpu_rows = 1 if self.app.gpu_line else 0  # the GPU line under the header, where there are GPUs
        compact = (self.size.height or self.app.size.height) - gpu_rows < COMPACT_BELOW
        self.set_class(compact, "compact")
        for chart in SIDE_CHARTS:
            self.query_one(f"#{chart}").set_class(compact and chart != self.side_chart, "hidden")

    def _tick(self) -> None:
        if self.record.get("status") in ACTIVE:
            self.update_view()  # elapsed and ETA move on between events

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
        now = time.time()
        width = self.size.width or self.app.size.width
        wide = width >= WIDE
        who = Text()
        who.append(f"{point_label(printable(record.get('name', '')))} ", style="bold")
        who.append(f"{self.run_id if wide else short_id(self.run_id)} ")
        who.append(status, style=STATUS_STYLE.get(status, ""))
        where: list[str] = []  # phase and epoch, percent, elapsed, ETA
        phase = live.phase_text()
        if phase:
            epochs = live.phase.epochs if live.phase else 0
            where.append(f"{phase} {'epoch' if wide else 'ep'} {live.epoch}/{epochs}")
        done, total = live.fraction()
        if status == DONE or total <= 0:
            done, total = 1.0, 1.0
        where.append(f"{100 * done / total:3.0f}%".strip())
        elapsed = live.clock.elapsed(now)
        if elapsed is not None:
            where.append(format_duration(elapsed))
            if status in ACTIVE:
                eta = live.clock.eta(now)
                phase_eta = live.clock.phase_eta(now)
                if eta is not None:
                    where.append(f"ETA {format_duration(eta)}")
                elif phase_eta is not None:
                    where.append(f"phase ETA {format_duration(phase_eta)}")
        info = self.query_one("#live-info", Static)
        # One line when it fits beside the bar, else two: who, then where it is (never cut away).
        room = (info.size.width or width - PROGRESS_WIDTH) - 2
        rest = "  ".join(where)
        one_line = who.cell_len + 2 + len(rest) <= room
        head = Text.assemble(who, ("  " if one_line else "\n") + rest)
        if head != self._head:  # same height: no layout pass (that would redraw the plots too)
            relayout = self._head is None or self._head.plain.count("\n") != head.plain.count("\n")
            self._head = head
            info.update(head, layout=relayout)
        latest = Text("  ".join(f"{metric_label(m)} {_fmt(live.latest(m))}" for m in LATEST), no_wrap=True,
                      overflow="ellipsis")
        if latest != self._latest:
            self._latest = latest
            self.query_one("#live-latest", Static).update(latest, layout=False)
        done, total = live.fraction()
        if status == DONE:
            done, total = 1.0, 1.0
        if (done, total) != self._bar:
            self._bar = (done, total)
            self.query_one("#live-progress", ProgressBar).update(total=total, progress=done)
        error = record.get("error") or (live.final.error if isinstance(live.final, Failed) else None)
        box = self.query_one("#live-error", Static)
        message = f"failed: {error or 'no error recorded'} (v: the event log)" if status == FAILED or error else ""
        if message != self._error:
            self._error = message
            box.update(plain(message, style="bold red"))
            box.set_class(not message, "hidden")
        if force or live.version != self._version:
            self._version = live.version
            self._draw_curves(record, live)
            self._draw_table(live)
        self._draw_log(live)

    def _draw_curves(self, record: dict, live) -> None:
        self.query_one("#plot-agreement", Curves).set_series([
            (metric_label("train_agreement"), *live.series("train_agreement")),
            (metric_label("test_agreement"), *live.series("test_agreement"))], references=[("1.0", 1.0)])
        teacher = teacher_accuracy(record, live)
        self.query_one("#plot-acc", Curves).set_series(
            [(metric_label("test_acc"), *live.series("test_acc"))],
            references=[(metric_label("teacher_test_acc"), teacher)] if teacher is not None else [])
        self.query_one("#plot-kl", Curves).set_series([(metric_label("test_kl"), *live.series("test_kl"))])

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
                table.add_column(plain(metric_label(metric)), key=metric)
        at_end = table.cursor_row >= table.row_count - 1
        for row in rows:
            key = f"{row['phase']}-{row['index']}-{row['epoch']}"
            if key in self._row_keys:
                continue
            self._row_keys.add(key)
            phase = teacher_short(row["index"]) if row["phase"] == "teacher" else "S"
            table.add_row(plain(phase), plain(row["epoch"]), *(plain(_fmt(row.get(m))) for m in self._columns[2:]),
                          key=key)
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)

    def _draw_log(self, live) -> None:
        new = live.log_total - self._log_shown
        if new <= 0:
            return
        lines = list(live.log)[-new:] if new < len(live.log) else list(live.log)
        log = self.query_one("#live-log", RichLog)
        for line in lines:
            log.write(plain(line, style="bold red" if "FAILED" in line else ""))
        self._log_shown = live.log_total

    # -- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_switch_chart(self) -> None:
        self.side_chart = SIDE_CHARTS[(SIDE_CHARTS.index(self.side_chart) + 1) % len(SIDE_CHARTS)]
        self._fit()

    def action_log(self) -> None:
        self.app.open_log(self.run_id)

    def action_stop(self) -> None:
        if self.record.get("status") in ACTIVE:
            self.app.stop_runs([self.run_id])
        else:
            self.notify(literal(f"{self.run_id} is {self.record.get('status')}"), severity="warning", markup=False)

    def action_resume(self) -> None:
        self.app.resume_runs([self.run_id])

    def action_edit_copy(self) -> None:
        self.app.open_editor(f"run:{self.run_id}")

    def action_copy_id(self) -> None:
        self.app.copy_run_id(self.run_id)

    def action_mark(self) -> None:
        marked = self.app.marked
        if self.run_id in marked:
            marked.remove(self.run_id)
            self.notify(literal(f"unmarked {self.run_id} ({len(marked)} marked)"), markup=False)
        else:
            marked.append(self.run_id)
            self.notify(literal(f"marked {self.run_id} ({len(marked)} marked; c on the runs screen compares)"),
                        markup=False)
