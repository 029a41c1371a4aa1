"""The compare screen: kdtui.analysis.compare's table (diff only, last/best/min/max, mean ± std by group)
with the runs' agreement curves overlaid; export to CSV or Markdown into the workspace's reports/."""
from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from kdtui.analysis.compare import (AGGREGATIONS, HIGHER_IS_BETTER, LOWER_IS_BETTER, MeanStd, compare, format_cell,
                                    metric_series, to_csv, to_markdown)
from kdtui.analysis.labels import cut_middle, run_labels
from kdtui.core.files import atomic_write
from kdtui.core.vocabulary import metric_label
from kdtui.tui.text import literal, plain
from kdtui.tui.widgets.curves import COLORS, MARKERS, Curves
from kdtui.tui.widgets.gpus import GpuStatus
from kdtui.tui.widgets.tables import RowTable

# More curves than this: the labels go to a legend table under the plots, keyed by colour and marker.
LEGEND_IN_PLOT_MAX = 6
LABEL_WIDTH = 22
MARKER_GLYPHS = {"braille": "⣿", "dot": "•"}  # plotext's marker names, as they look


@dataclass
class RecordsRead(Message):
    records: list[dict]
    error: str = ""


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("d", "toggle_diff", "Diff only"),
        Binding("a", "cycle_agg", "Metric per run: last, best, min, max", show=False),  # off the footer: 80 columns
        Binding("g", "toggle_group", "By group"),
        Binding("x", "export('csv')", "CSV"),
        Binding("k", "export('md')", "Markdown"),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = list(run_ids)
        self.records: list[dict] = []
        self.diff_only = True   # the terminal is small: show what differs
        self.agg = "last"
        self.by_group = False
        self.comparison = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield GpuStatus()  # hidden without GPUs or nvidia-ml-py
        yield Static("reading runs…", id="compare-info")
        yield RowTable(id="compare-table", cursor_type="row", zebra_stripes=True, header_height=2)
        with Horizontal(id="compare-plots"):
            yield Curves(metric_label("test_agreement"), y_range=(0.0, 1.02), id="compare-test")
            yield Curves(metric_label("train_agreement"), y_range=(0.0, 1.02), id="compare-train")
        yield Static("", id="compare-legend", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_reload()

    def action_reload(self) -> None:
        workspace, ids = self.app.workspace, list(self.run_ids)

        def read() -> None:
            from kdtui.core.registry import RunStore, record_with_history

            store = RunStore(workspace)
            records, missing, unreadable = [], [], []
            for run_id in ids:
                try:
                    records.append(record_with_history(store, workspace, run_id))
                except KeyError:
                    missing.append(run_id)
                except OSError as exc:  # its event log cannot be read: the record without curves
                    record = store.get(run_id)
                    if record is not None:
                        records.append({**record, "history": []})
                    unreadable.append(str(exc))
            problems = ([f"gone: {', '.join(missing)}"] if missing else []) + unreadable
            self.post_message(RecordsRead(records, "; ".join(problems)))
        self.run_worker(read, thread=True, group="compare-read", exclusive=True, exit_on_error=False)

    def on_records_read(self, message: RecordsRead) -> None:
        self.records = message.records
        if message.error:
            self.notify(literal(message.error), severity="warning", markup=False)
        self.redraw()
        self._draw_curves()

    # -- drawing ------------------------------------------------------------------------------

    def redraw(self) -> None:
        info = self.query_one("#compare-info", Static)
        if not self.records:
            info.update("no runs to compare")
            return
        self.comparison = c = compare(self.records, diff_only=self.diff_only, agg=self.agg, by_group=self.by_group)
        info.update(plain(f"{len(self.records)} runs · agg {self.agg} (a) · diff only {'on' if self.diff_only else 'off'}"
                          f" (d) · by group {'on' if self.by_group else 'off'} (g) · export: x csv, k md"))
        # Labels (τ=1) over the short id or the group's count of distinct seeds: kdtui.analysis.compare.
        heads = c.headers()
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # The row labels' width set here, not left to the table's auto width: that is worked out on an
        # idle tick after the rows land, and a screen captured in between kept it at the header's 3 cells.
        row_labels = ["group" if c.by_group else "run", f"metrics ({c.agg})",
                      *(key for key, _ in c.config_rows), *(metric_label(key) for key, _ in c.metric_rows)]
        table.add_column(plain(row_labels[0]), key="key", width=max(map(len, row_labels)))
        for i, (label, under) in enumerate(heads):
            table.add_column(plain(f"{cut_middle(literal(label), LABEL_WIDTH)}\n{under}", justify="right"), key=f"c{i}")
        for key, values in c.config_rows:
            table.add_row(plain(key), *(plain("—" if v is None else v, justify="right") for v in values),
                          key=f"cfg:{key}")
        table.add_row(Text(f"metrics ({c.agg})", style="bold"), *([Text()] * len(c.columns)), key="__metrics__")
        for key, values in c.metric_rows:
            # By group, cells are MeanStd counted by seed (kdtui.analysis.compare.mean_std): no ± below
            # two distinct seeds, † where runs share a seed.
            best = None
            if len(values) > 1 and (key in HIGHER_IS_BETTER or key in LOWER_IS_BETTER):
                numbers = [v.mean if isinstance(v, MeanStd) else v for v in values]
                present = [(n, i) for i, n in enumerate(numbers) if isinstance(n, (int, float)) and n == n]
                if present:
                    best = (max if key in HIGHER_IS_BETTER else min)(present)[1]
            table.add_row(plain(metric_label(key)),
                          *(Text(format_cell(v, 4), justify="right",
                                 style="bold green" if i == best else "") for i, v in enumerate(values)), key=key)
        if c.by_group and any("†" in under for _, under in heads):
            info.update(plain(info.render().plain + " · † runs share a seed: averaged, not counted as independent"))

    def _draw_curves(self) -> None:
        labels = run_labels(self.records)
        in_plot = len(self.records) <= LEGEND_IN_PLOT_MAX
        for metric, widget_id in (("test_agreement", "#compare-test"), ("train_agreement", "#compare-train")):
            series = []
            for record in self.records:
                points = metric_series(record, metric)
                series.append((cut_middle(literal(labels[str(record.get("id"))]), LABEL_WIDTH),
                               [e or 0 for e, _ in points], [v for _, v in points]))
            self.query_one(widget_id, Curves).set_series(series, references=[("1.0", 1.0)], legend=in_plot)
        legend = self.query_one("#compare-legend", Static)
        legend.set_class(in_plot, "hidden")
        if not in_plot:
            from rich.table import Table

            grid = Table.grid(padding=(0, 2))
            columns = 3
            for _ in range(columns):
                grid.add_column(no_wrap=True)
            cells = [Text.assemble((f"{MARKER_GLYPHS.get(MARKERS[i % len(MARKERS)], MARKERS[i % len(MARKERS)])} ",
                                    COLORS[i % len(COLORS)]), plain(cut_middle(literal(labels[str(r.get("id"))]), LABEL_WIDTH)))
                     for i, r in enumerate(self.records)]
            for start in range(0, len(cells), columns):
                grid.add_row(*cells[start:start + columns])
            legend.update(grid)

    # -- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_diff(self) -> None:
        self.diff_only = not self.diff_only
        self.redraw()

    def action_cycle_agg(self) -> None:
        self.agg = AGGREGATIONS[(AGGREGATIONS.index(self.agg) + 1) % len(AGGREGATIONS)]
        self.redraw()

    def action_toggle_group(self) -> None:
        self.by_group = not self.by_group
        self.redraw()

    def action_export(self, fmt: str) -> None:
        if self.comparison is None:
            return
        text = to_csv(self.comparison) if fmt == "csv" else to_markdown(self.comparison)
        folder = self.app.workspace.reports_dir
        stem = time.strftime("compare-%Y%m%d-%H%M%S")

        def write() -> str:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{stem}.{fmt}"
            n = 1
            while path.exists():
                n += 1
                path = folder / f"{stem}-{n}.{fmt}"
            atomic_write(path, text)
            self.last_export = path
            return f"wrote {path}"
        self.app.run_task("export", write)
