"""The progress display of a foreground run, and its summary table; driven by the events the run
writes to its events file (typed, or their decoded lines), folded as every reader folds them.

Everything fits 80 columns: a header line (the run's short id and name, elapsed time, ETA), one
short row per phase (bar, epoch counter, the phase's time left), and a line with the latest
epoch's metrics, each cut to the terminal's width rather than squeezing the bar and the counter.
"""
from __future__ import annotations

import time
from dataclasses import replace

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from kdtui.analysis.labels import cut_middle, cut_name, short_id
from kdtui.core.events import FINAL_EVENTS, BadEvent, EpochMetrics, Event, PhaseEnd, PhaseStart, parse
from kdtui.core.events import Progress as ProgressEvent
from kdtui.core.names import printable
from kdtui.core.record import shown_metrics
from kdtui.core.runstate import RunState, describe, phase_label
from kdtui.core.timing import format_duration
from kdtui.core.vocabulary import metric_label, metric_order

# Metrics the summary leaves out: the learning rate at the end of a schedule (0 after cosine) is noise.
NOT_IN_SUMMARY = ("lr",)
BAR_WIDTH = 24


class _RunDisplay(Progress):
    """rich's Progress with a header line above the phase rows and the latest metrics below them
    (Progress documents `get_renderables` as the place to add renderables)."""

    def __init__(self, run: "RunProgress", *columns, **options):
        self.run = run  # first: Progress draws once while it is made
        super().__init__(*columns, **options)

    def get_renderables(self):
        yield Group(self.run.header(), self.make_tasks_table(self.tasks), self.run.metrics_line())


class RunProgress:
    """One row per phase (each teacher member, then the student), advanced per step; the run's
    elapsed time and ETA come from the fold of the same events (RunState's clock)."""

    def __init__(self, console: Console, run_id: str, name: str = ""):
        self.console = console
        self.run_id = run_id
        self.name = printable(name) if name else ""
        self.state = RunState()
        self.clock = self.state.clock
        self.latest = ""   # the newest epoch's metrics
        self.progress = _RunDisplay(
            self, TextColumn("{task.description}", style="cyan", markup=False), BarColumn(bar_width=BAR_WIDTH),
            TextColumn("{task.fields[epochs]}"), TextColumn("{task.fields[left]}"),
            console=console, transient=False)
        self.tasks: dict[tuple, int] = {}
        self.epochs: dict[tuple, int] = {}
        self.current: tuple | None = None

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    # -- what is drawn ------------------------------------------------------------------------------

    def header(self) -> Text:
        now = time.time()
        eta = self.clock.eta(now)
        times = f"  elapsed {format_duration(self.clock.elapsed(now))}"
        if not self.clock.finished:
            times += f"  ETA {format_duration(eta)}"
        head = short_id(self.run_id)
        width = max(self.console.width - len(times) - len(head) - 1, 8)
        if self.name:  # a sweep point keeps its values (`kd-di…[τ=4,seed=0]`)
            head += " " + cut_name(self.name, width)
        return Text(head, style="bold", no_wrap=True, overflow="ellipsis") + Text(times)

    def metrics_line(self) -> Text:
        return Text(cut_middle(self.latest, self.console.width), no_wrap=True)

    def _phase_left(self) -> str:
        left = self.clock.phase_eta(time.time())
        return f"left {format_duration(left)}" if left else ""

    # -- events -------------------------------------------------------------------------------------

    def __call__(self, event: Event | dict) -> None:
        try:
            event = parse(event)
        except BadEvent:
            return
        if event.t is None:  # the writer stamps the file's copy; this one is stamped on arrival
            event = replace(event, t=time.time())
        self.state.feed_one(event)
        key = (getattr(event, "phase", None), getattr(event, "index", 0))
        if isinstance(event, PhaseStart):
            epochs = max(event.epochs, 1)
            steps = epochs * max(event.steps_per_epoch, 1)
            self.tasks[key] = self.progress.add_task(
                phase_label(event), total=steps, completed=steps if event.reused else 0,
                epochs=f"epoch 0/{epochs}" if not event.reused else "reused", left="")
            self.epochs[key] = epochs
            self.current = key
        elif isinstance(event, ProgressEvent) and key in self.tasks:
            done = (event.epoch - 1) * event.steps + event.step
            self.progress.update(self.tasks[key], completed=done, epochs=f"epoch {event.epoch}/{self.epochs[key]}",
                                 left=self._phase_left())
        elif isinstance(event, EpochMetrics):
            self.latest = printable(describe(event))
        elif isinstance(event, PhaseEnd) and key in self.tasks:
            task = self.tasks[key]
            self.progress.update(task, completed=self.progress.tasks[task].total, left="done")
        elif isinstance(event, FINAL_EVENTS) and self.current in self.tasks:
            self.progress.update(self.tasks[self.current], left="")


def summary_table(record: dict, label: str = "") -> Table:
    """The final metrics of a run under its label (what sets it apart in its sweep: `τ=1`, from
    kdtui.analysis.labels.run_labels), its name and its short id."""
    # Text, not a markup string: a name is shown as it is, escaped (kdtui.core.names), never styled.
    name = printable(record.get("name"))
    head = f"{label}  {name}" if label and label != name else name
    metrics, epoch = shown_metrics(record)  # a stopped run: its last finished epoch's, marked so
    status = record["status"] if epoch is None else f"{record['status']}; metrics of epoch {epoch}, its last"
    title = Text(printable(f"{head}  ({short_id(record['id'])}, {status})"))
    # At least as wide as its title, so a name is wrapped only where the terminal is narrower.
    table = Table(title=title, show_header=True, min_width=title.cell_len)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in metric_order(metrics):  # as every table lists them (kdtui.core.vocabulary)
        value = metrics.get(name)
        if name in NOT_IN_SUMMARY:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and name != "epoch":
            table.add_row(Text(printable(metric_label(name))), str(value))  # a count (test_examples)
        elif isinstance(value, float):
            table.add_row(Text(printable(metric_label(name))), f"{value:.4f}")
    if record.get("error"):  # the run's own words (a path, a user's value): text, never markup
        table.add_row("error", Text(printable(record["error"], lines=True)))
    return table
