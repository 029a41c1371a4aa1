"""Rich progress bars for a foreground run, driven by the same event dicts the events file holds."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kdtui.core.names import printable

HEADLINE = ("train_agreement", "test_agreement", "test_acc", "teacher_test_acc", "test_kl")


class RunProgress:
    """One bar per phase (each teacher member, then the student), advanced per epoch and step."""

    def __init__(self, console: Console, title: str):
        self.console = console
        self.title = title
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.tasks: dict[tuple, int] = {}

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _label(self, event: dict) -> str:
        if event.get("phase") == "teacher":
            return f"{self.title} teacher {event.get('index', 0) + 1}/{event.get('total', 1)}"
        return f"{self.title} {event.get('phase') or 'student'}"  # student, or E12's independent student

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        key = (event.get("phase"), event.get("index", 0))
        if kind == "phase_start":
            epochs = max(int(event.get("epochs") or 0), 1)
            status = "reused from the teacher store" if event.get("reused") else ""
            self.tasks[key] = self.progress.add_task(self._label(event), total=epochs * max(event.get("steps_per_epoch") or 1, 1),
                                                     status=status, completed=0)
        elif kind == "progress" and key in self.tasks:
            done = (event["epoch"] - 1) * event["steps"] + event["step"]
            task = self.tasks[key]
            self.progress.update(task, completed=done)
        elif kind == "epoch" and key in self.tasks:
            self.progress.update(self.tasks[key], status=describe_epoch(event))
        elif kind == "phase_end" and key in self.tasks:
            task = self.tasks[key]
            self.progress.update(task, completed=self.progress.tasks[task].total)


def describe_epoch(event: dict) -> str:
    m = event.get("metrics", {})
    parts = [f"epoch {event.get('epoch')}"]
    for name, short in (("train_agreement", "train agr"), ("test_agreement", "test agr"), ("test_acc", "acc")):
        if isinstance(m.get(name), (int, float)):
            parts.append(f"{short} {m[name]:.3f}")
    return "  ".join(parts)


def summary_table(record: dict) -> Table:
    # Text, not a markup string: a name is shown as it is, escaped (kdtui.core.names), never styled.
    table = Table(title=Text(f"{printable(record['name'])}  ({record['id']}, {record['status']})"), show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = record.get("metrics") or {}
    for name in HEADLINE + tuple(k for k in sorted(metrics) if k not in HEADLINE):
        value = metrics.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name != "epoch":
            table.add_row(name, str(value))  # a count (test_examples)
        elif isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
    if record.get("error"):
        table.add_row("error", record["error"])
    return table
