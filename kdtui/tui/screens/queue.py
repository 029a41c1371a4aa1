"""The queue screen: the device slots and who runs in each, then the line of runs waiting for a
slot, first in line first. The same data as `kdtui queue` (kdtui.runs.executors.slots.queue_state),
reread every second in a worker thread. A waiting run is picked with up/down (the pick follows the
run, not the row); x cancels it (stops it: out of the line), K and J move it up and down the line,
enter opens it."""
from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from kdtui.analysis.labels import point_label
from kdtui.core.ages import age_text
from kdtui.tui.text import plain
from kdtui.tui.widgets.gpus import GpuStatus

REFRESH_S = 1.0


@dataclass
class QueueRead(Message):
    state: dict
    error: str = ""


def queue_tables(state: dict, picked: str | None = None) -> Table:
    """The slots table, then the waiting line (the `picked` run highlighted), as one renderable."""
    outer = Table.grid()
    gpus = state.get("gpus") or []
    where = f"GPUs {', '.join(gpus)}" if gpus else "no GPU: CPU slots"
    outer.add_row(plain(f"{state.get('slots_per_gpu')} slot(s) per device; {where}", style="bold"))
    slots = Table(box=None, padding=(0, 2), header_style="bold")
    for header in ("slot", "run", "name", "since"):
        slots.add_column(header, no_wrap=True)
    for slot in state.get("slots") or []:
        # Cells as text: rich reads a `str` cell as markup, and a run's name is anything.
        slots.add_row(plain(slot["slot"]), plain(slot.get("run") or "free"), plain(point_label(slot.get("name") or "")),
                      plain(age_text(slot.get("started")) if slot.get("run") else ""))
    outer.add_row(slots)
    waiting = state.get("waiting") or []
    outer.add_row(Text(f"\nwaiting: {len(waiting)}", style="bold"))
    if waiting:
        line = Table(box=None, padding=(0, 2), header_style="bold")
        for header in ("#", "run", "name", "waiting"):
            line.add_column(header, no_wrap=True)
        for i, entry in enumerate(waiting):
            line.add_row(plain(i + 1), plain(entry["run"]), plain(point_label(entry.get("name") or "")),
                         plain(age_text(entry.get("enqueued"))), style="reverse" if entry["run"] == picked else None)
        outer.add_row(line)
    return outer


class QueueScreen(Screen):
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("up,k", "pick(-1)", "Previous", show=False),
        Binding("down,j", "pick(1)", "Next", show=False),
        Binding("x,delete", "cancel", "Cancel run"),
        Binding("K", "move(-1)", "Move up"),
        Binding("J", "move(1)", "Move down"),
        Binding("enter", "open", "Open"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state: dict | None = None
        self.picked: str | None = None  # a waiting run's id: the pick stays on it as the line changes

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStatus()  # hidden without GPUs or nvidia-ml-py
        with VerticalScroll(id="queue-box"):
            yield Static("reading the queue…", id="queue-view")
        yield Footer()

    def on_mount(self) -> None:
        self.read()
        self.set_interval(REFRESH_S, self.read)

    def read(self) -> None:
        workspace = self.app.workspace

        def work() -> None:
            from kdtui.core.registry import RunStore
            from kdtui.runs.executors.slots import queue_state

            try:
                self.post_message(QueueRead(queue_state(workspace, RunStore(workspace))))
            except Exception as exc:  # a bad settings.toml: say so in place of the tables
                self.post_message(QueueRead({}, " ".join(str(exc).split())))
        self.run_worker(work, thread=True, group="queue-read", exclusive=True, exit_on_error=False)

    def on_queue_read(self, message: QueueRead) -> None:
        view = self.query_one("#queue-view", Static)
        if message.error:
            view.update(plain(f"error: {message.error}", style="bold red"))
            return
        self.state = message.state
        waiting = self.waiting_ids
        if self.picked not in waiting:
            self.picked = waiting[0] if waiting else None
        view.update(queue_tables(message.state, self.picked))

    @property
    def waiting_ids(self) -> list[str]:
        return [entry["run"] for entry in (self.state or {}).get("waiting") or []]

    def action_pick(self, step: int) -> None:
        waiting = self.waiting_ids
        if self.picked in waiting:
            self.picked = waiting[max(0, min(len(waiting) - 1, waiting.index(self.picked) + step))]
            self.query_one("#queue-view", Static).update(queue_tables(self.state, self.picked))

    def action_cancel(self) -> None:
        if self.picked:
            self.app.stop_runs([self.picked])  # a waiting run stopped leaves the line at once

    def action_open(self) -> None:
        if self.picked:
            self.app.open_run(self.picked)

    def action_move(self, step: int) -> None:
        """Swap the picked run with its neighbour in the waiting line (entries of runs that no
        longer wait, still in the file, keep their places)."""
        waiting = self.waiting_ids
        if self.picked not in waiting:
            return
        at = waiting.index(self.picked) + step
        if not 0 <= at < len(waiting):
            return
        run_id, other, workspace = self.picked, waiting[at], self.app.workspace

        def work() -> None:
            from kdtui.runs.executors.slots import RunQueue

            queue = RunQueue(workspace)
            with queue.locked():
                line = queue.read_line()
                ids = [entry.get("run") for entry in line]
                if run_id in ids and other in ids:
                    i, j = ids.index(run_id), ids.index(other)
                    line[i], line[j] = line[j], line[i]
                    queue.write_line(line)
            self.app.call_from_thread(self.read)
        self.run_worker(work, thread=True, group="queue-move", exit_on_error=False)

    def action_back(self) -> None:
        self.app.pop_screen()
