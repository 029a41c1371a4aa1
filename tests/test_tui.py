"""The terminal app, driven through Textual's Pilot on workspaces of real (tiny) digits runs.

The runs are made once per session by the real CLI (`kdtui run SPEC --json` in a subprocess) and
each test that changes its workspace gets a copy. Tests wait on conditions, never on fixed sleeps.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from kdtui.core.events import Done, Stopped
from kdtui.core.procs import pid_alive
from kdtui.core.registry import RunStore
from kdtui.core.spec import SpecError, spec_from_dict
from kdtui.core.workspace import Workspace
from tests.cli_helpers import wait_for as poll_until  # the same poll, without an app

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, TextArea  # noqa: E402

from kdtui.tui.app import KdtuiApp  # noqa: E402
from kdtui.tui.screens.compare import CompareScreen  # noqa: E402
from kdtui.tui.screens.editor import EditorScreen, widget_id  # noqa: E402
from kdtui.tui.screens.help import HelpScreen  # noqa: E402
from kdtui.tui.screens.live import LiveScreen  # noqa: E402
from kdtui.tui.screens.modals import ConfirmScreen  # noqa: E402
from kdtui.tui.screens.runs import COLUMNS, RunsScreen  # noqa: E402
from kdtui.tui.state import LOG_LINES  # noqa: E402
from kdtui.tui.widgets.curves import Curves  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
# Tiny and quick: the teacher sees 200 images; batch 64. Each point takes a few seconds on 2 cores.
TINY = """\
name = "tiny"
[data]
dataset = "digits"
teacher_subset = 200
[teacher]
epochs = 2
batch_size = 64
[student]
epochs = {student_epochs}
batch_size = 64
"""
SIZE = (100, 30)


def tiny_spec(student_epochs: int = 2, seeds: list[int] | None = None) -> str:
    text = TINY.format(student_epochs=student_epochs)
    if seeds is not None:
        text += f"[sweep]\nseed = {json.dumps(seeds)}\n"
    return text


def _worker_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # a loaded 2-core machine: one thread per run is faster
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- helpers ----------------------------------------------------------------------------------------

async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "condition"):
    """Let the app run until `predicate()` is true (an exception counts as false)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


def screen_text(app) -> str:
    """What the terminal shows now, as plain text lines (the screen and any modal over it)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def table_rows(table: DataTable) -> list[list[str]]:
    return [[getattr(c, "plain", str(c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


def status_of(app, run_id: str) -> str | None:
    return (app.by_id.get(run_id) or {}).get("status")


def make_app(ws: Path) -> KdtuiApp:
    return KdtuiApp(str(ws), registry_poll=0.3, events_poll=0.05)


async def loaded(pilot, rows: int | None = None):
    app = pilot.app
    await wait_for(pilot, lambda: app.loaded and isinstance(app.screen, RunsScreen), what="the registry")
    table = app.screen.query_one(DataTable)
    await wait_for(pilot, lambda: table.row_count == (rows if rows is not None else len(app.records)),
                   what="the runs table")
    return table


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def template_ws(tmp_path_factory) -> Path:
    """A workspace with two real finished runs (seeds 0 and 1 of the tiny spec, one group), made by
    the public CLI in the foreground: `kdtui run SPEC`."""
    ws = tmp_path_factory.mktemp("tui") / "ws"
    spec_path = ws.parent / "tiny.toml"
    spec_path.write_text(tiny_spec(seeds=[0, 1]))
    proc = subprocess.run([sys.executable, "-m", "kdtui.cli", "run", str(spec_path), "--workspace", str(ws)],
                          env=_worker_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [r["status"] for r in RunStore(Workspace(ws)).all()] == ["done", "done"]
    return ws


@pytest.fixture
def ws(template_ws, tmp_path, monkeypatch) -> Path:
    """A private copy of the template workspace; runs the test started are stopped at the end."""
    copy = tmp_path / "ws"
    shutil.copytree(template_ws, copy)
    for key, value in _worker_env().items():
        monkeypatch.setenv(key, value)  # launch_detached hands the environment on to the runs
    yield copy
    store = RunStore(Workspace(copy))
    for record in store.all():
        pid = record.get("pid")
        if record.get("status") in ("running", "queued") and isinstance(pid, int) and pid != os.getpid() \
                and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)  # a process this test launched


def ids_by_seed(ws: Path) -> dict[int, str]:
    return {r["spec"]["seed"]: r["id"] for r in RunStore(Workspace(ws)).all(details=True)}


# -- runs screen ----------------------------------------------------------------------------------

def rows_by_id(table: DataTable) -> dict[str, dict[str, str]]:
    """run id -> {column key: cell text} (the id column may show only the id's suffix)."""
    keys = [column.key.value for column in table.columns.values()]
    return {row.key.value: dict(zip(keys, (getattr(c, "plain", str(c)).strip() for c in table.get_row(row.key))))
            for row in table.ordered_rows}


async def test_a_long_runs_list_holds_the_rows_near_the_view_and_end_reaches_the_oldest(tmp_path):
    """At lab scale the table holds the rows down to ROWS_AHEAD past the cursor (a DataTable measures
    every cell it holds, which at 10,000 runs took seconds); moving down adds rows as the cursor
    nears their end, and End goes to the oldest run, not to the last row added so far."""
    from kdtui.tui.screens.runs import ROWS_AHEAD

    n = 2 * ROWS_AHEAD + 50
    ids = [f"260101-00{k // 60:02d}{k % 60:02d}-{k:04x}" for k in range(n)]
    RunStore(Workspace(tmp_path / "ws")).add_many(
        [{"id": run_id, "name": f"point-{k}", "status": "done", "created": 1.7e9 + k,
          "metrics": {"test_agreement": k / n, "epoch": 3}} for k, run_id in enumerate(ids)])
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=ROWS_AHEAD)
        screen = app.screen
        assert screen.current_id() == ids[-1] and len(screen.visible_ids) == n  # newest first, all listed
        for _ in range(4):
            await pilot.press("pagedown")
        await pilot.pause()
        assert ROWS_AHEAD < table.cursor_row + ROWS_AHEAD <= table.row_count < n
        assert screen.current_id() == ids[n - 1 - table.cursor_row]
        await pilot.press("end")
        await wait_for(pilot, lambda: screen.current_id() == ids[0], what="the oldest run under the cursor")
        assert table.row_count == n and table.cursor_row == n - 1
        await pilot.press("home")
        await wait_for(pilot, lambda: screen.current_id() == ids[-1], what="the newest run again")

        # Now that every row is held: redraws touch what they must, not every row.
        redrawn: list[list[str]] = []
        update_rows = screen._update_rows
        screen._update_rows = lambda run_ids: (redrawn.append(list(run_ids)), update_rows(run_ids))
        screen._refresh_ages()
        assert ids[-1] in redrawn[-1] and len(redrawn[-1]) <= table.size.height + ROWS_AHEAD  # near the view
        RunStore(Workspace(tmp_path / "ws")).update(ids[0], status="failed")
        app.refresh_registry()
        await wait_for(pilot, lambda: "failed" in rows_by_id(table)[ids[0]]["status"], what="the oldest run's new status")
        assert [ids[0]] in redrawn  # the registry changed one record: one row redrawn
        assert all(len(batch) <= table.size.height + ROWS_AHEAD for batch in redrawn)


async def test_runs_screen_layout_fits_80x24(template_ws):
    app = make_app(template_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await loaded(pilot, rows=2)
        headers = [str(c.label).strip() for c in table.columns.values()]
        # 80 columns: the id shows its suffix, train agreement, age and accuracy give way to the name
        assert headers == ["status", "name", "id", "progress", "test agr", "time ~left"]
        assert table.virtual_size.width <= table.size.width <= 80  # no sideways scrolling
        text = screen_text(app)
        lines = text.splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        header_line = next(line for line in lines if "status" in line and "progress" in line)
        positions = [header_line.index(h) for h in headers]
        assert positions == sorted(positions)
        seeds = ids_by_seed(template_ws)
        rows = rows_by_id(table)
        assert set(rows) == set(seeds.values())
        for run_id in seeds.values():
            assert run_id.rsplit("-", 1)[1] in text and rows[run_id]["id"] == run_id.rsplit("-", 1)[1]
            assert rows[run_id]["status"] == "done"
            assert rows[run_id]["progress"] == "S 2/2"
            assert rows[run_id]["test"].startswith("0.")  # test agreement from the record
            assert rows[run_id]["time"].endswith("s")     # how long it ran: "12s", "1m05s"
        # newest first
        assert table.ordered_rows[0].key.value == seeds[1]
        # the summary bar and the footer are drawn after the rows: wait for them, not only for the table
        await wait_for(pilot, lambda: "2 runs" in screen_text(app) and "Launch" in screen_text(app),
                       what="the summary and the footer")


async def test_runs_screen_at_100x30_keeps_accuracy_and_time(template_ws):
    app = make_app(template_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await loaded(pilot, rows=2)
        headers = [str(c.label).strip() for c in table.columns.values()]
        # the train agreement gives way to a sweep point's label (`digits-temp · τ=8.0 seed=1`)
        assert headers == ["status", "name", "id", "progress", "test agr", "test acc", "time ~left", "age"]
        assert table.virtual_size.width <= table.size.width <= 100
        assert all(cells["acc"].startswith("0.") for cells in rows_by_id(table).values())
    app = make_app(template_ws)
    async with app.run_test(size=(160, 45)) as pilot:
        table = await loaded(pilot, rows=2)
        seeds = ids_by_seed(template_ws)
        assert rows_by_id(table)[seeds[0]]["id"] == seeds[0]  # wide enough for the whole id


async def test_queued_rows_age_moves_on_with_the_clock_tick(ws, monkeypatch):
    """A queued run writes no events and its record does not change while it waits: its age cell
    moves on with the 1 s clock tick (`_refresh_clocks`), not only with the 10 s age refresh; a
    done run's age is left to the age refresh."""
    from types import SimpleNamespace

    from kdtui.core.events import QUEUED
    from kdtui.tui.screens import runs as runs_screen

    done_id = next(r["id"] for r in RunStore(Workspace(ws)).all() if r["status"] == "done")
    run_id = "260101-000000-0a9e"
    RunStore(Workspace(ws)).add({"id": run_id, "name": "waiting", "status": QUEUED, "host": HOST,
                                 "created": time.time() - 5, "spec": {"student": {"epochs": 2}}})
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=3)
        screen = app.screen
        before = rows_by_id(table)
        assert before[run_id]["age"].endswith("s") and int(before[run_id]["age"][:-1]) >= 5
        assert not before[done_id]["age"].endswith("d")  # the template's runs were made minutes ago
        # Three days on, for the runs screen only (the app's own timers keep the real clock). No
        # await from here on: neither of the screen's timers can run in between.
        later = time.time() + 3 * 86400
        monkeypatch.setattr(runs_screen, "time", SimpleNamespace(time=lambda: later))
        screen._refresh_clocks()
        ticked = rows_by_id(table)
        assert ticked[run_id]["age"] == "3d"
        assert ticked[done_id]["age"] == before[done_id]["age"]  # a clock tick leaves finished runs alone
        screen._refresh_ages()
        assert rows_by_id(table)[done_id]["age"] == "3d"
        assert status_of(app, run_id) == QUEUED


async def test_filter_and_help(template_ws):
    app = make_app(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=2)
        await pilot.press("slash")
        for ch in "seed=0":
            await pilot.press("equals_sign" if ch == "=" else ch)
        await wait_for(pilot, lambda: table.row_count == 1, what="the filter")
        assert "seed=0" in table_rows(table)[0][1]
        await pilot.press("escape")
        await wait_for(pilot, lambda: table.row_count == 2, what="the filter cleared")

        await pilot.press("f1")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen,
                                     what="help")
        rows = dict((what, keys) for keys, what in help_screen.rows)
        for binding in RunsScreen.BINDINGS:  # generated from the screen's bindings
            assert binding.description in rows
        assert rows["Launch"] == "l" and rows["Filter"] == "/" and rows["Mark"] == "space / m"
        assert rows["Quit"] == "q / ctrl+c" and rows["Help"] == "f1 / ?"
        text = screen_text(app)
        assert "Launch" in text and "Compare" in text and "Delete" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="help closed")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help by ?")


async def test_command_palette_opens_the_editor(template_ws):
    app = make_app(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="the palette")
        for ch in "launch":
            await pilot.press(ch)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen), what="the editor")


async def test_sort_by_key_and_header_click_then_queue_and_log_screens(template_ws):
    from kdtui.tui.screens.log import LogScreen
    from kdtui.tui.screens.queue import QueueScreen

    seeds = ids_by_seed(template_ws)
    by_test = sorted(seeds.values(), key=lambda i: RunStore(Workspace(template_ws)).get(i)["metrics"]["test_agreement"])
    app = make_app(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=2)
        order = lambda: [row.key.value for row in table.ordered_rows]  # noqa: E731
        assert order() == [seeds[1], seeds[0]]  # newest first
        await pilot.press("O")  # reverse: oldest first
        await wait_for(pilot, lambda: order() == [seeds[0], seeds[1]], what="oldest first")
        assert "age▼" in [str(c.label).strip() for c in table.columns.values()]
        # a click on the "test agr" header sorts by test agreement, a second click reverses
        header = next(line for line in screen_text(app).splitlines() if "test agr" in line and "status" in line)
        x = header.index("test agr") + 2
        y = table.region.y
        await pilot.click(offset=(x, y))
        await wait_for(pilot, lambda: app.screen.sort_key == "test" and order() == by_test, what="sorted by test agr")
        await pilot.click(offset=(x, y))
        await wait_for(pilot, lambda: app.screen.sort_reverse and order() == by_test[::-1], what="reversed")
        for _ in range(len(COLUMNS) + 1):  # o walks the columns, then back to newest first
            await pilot.press("o")
            if app.screen.sort_key is None:
                break
        assert app.screen.sort_key is None and order() == [seeds[1], seeds[0]]

        await pilot.press("w")
        queue = await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen, what="queue")
        await wait_for(pilot, lambda: queue.state is not None, what="the queue read")
        text = screen_text(app)
        assert "slot" in text and "waiting: 0" in text and "cpu.0" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")

        await pilot.press("v")
        log = await wait_for(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen, what="the log")
        await wait_for(pilot, lambda: len(log.lines) > 10, what="the event log read")
        events = (template_ws / seeds[1] / "events.jsonl").read_text().splitlines()
        ticks = [e for e in events if json.loads(e)["type"] == "progress"]
        assert ticks and len(log.lines) == len(events) - len(ticks)  # progress hidden by default
        await pilot.press("p")
        await wait_for(pilot, lambda: len(log.lines) == len(events), what="every event, progress included")
        await pilot.press("p")
        await wait_for(pilot, lambda: len(log.lines) == len(events) - len(ticks), what="progress hidden again")
        await pilot.press("slash", *"start", "enter")
        lines_table = log.query_one("#log-lines", DataTable)
        await wait_for(pilot, lambda: "teacher 1/1: start" in log.lines[lines_table.cursor_row], what="the first match")
        await pilot.press("n")
        await wait_for(pilot, lambda: "student: start" in log.lines[lines_table.cursor_row], what="the next match")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back from the log")


async def _palette_hits(pilot, query: str) -> list[str]:
    """The palette's answers to `query`, as their plain titles (best first)."""
    from textual.command import CommandList

    app = pilot.app
    await pilot.press("ctrl+p")
    palette = await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette" and app.screen,
                             what="the palette")
    await pilot.press(*query)
    commands = palette.query_one(CommandList)

    def settled():
        return [str(getattr(o.prompt, "plain", o.prompt)).split("\n")[0] for o in commands.options] or None
    first = await wait_for(pilot, settled, what=f"hits for {query!r}")
    await pilot.pause(0.5)  # hits arrive in batches: take the list once it stops growing
    titles = settled() or first
    await pilot.press("escape")
    return titles


async def test_editor_and_palette_offer_every_paper_preset(template_ws):
    from kdtui.core.presets import SCALES, list_presets
    from textual.widgets import Select

    presets = list_presets()
    app = make_app(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("l")
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        select = editor.query_one("#editor-source", Select)
        options = await wait_for(pilot, lambda: [(str(p), v) for p, v in select._options if v != Select.NULL]
                                 if len(select._options) > 20 else None, what="the start-from list")
        values = [value for _, value in options]
        for preset in presets:
            for scale in SCALES:
                title = next(t for t, v in options if v == f"preset:{preset.id}:{scale}")
                assert title == f"{preset.id.upper()} {scale} — {preset.title}"
        assert "preset:digits" in values and all(f"run:{i}" in values for i in ids_by_seed(template_ws).values())
        # picking E7 tiny fills the form from the preset's file
        select.value = "preset:e7:tiny"
        await wait_for(pilot, lambda: editor.source == "e7-interpolation.tiny.toml" and "valid" in editor.status_text,
                       what="E7 loaded")
        assert editor.data["name"] == "e7-interpolation-tiny" and "student.init_lambda" in editor.data["sweep"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")

        hits = await _palette_hits(pilot, "e7")
        e7_title = next(p.title for p in presets if p.id == "e7")  # by id: the list has split presets (e4a, e4b…)
        e7 = {f"{verb} preset E7 {scale} — {e7_title}" for verb in ("Edit", "Launch") for scale in SCALES}
        assert set(hits[:len(e7)]) == e7  # first, above fuzzy matches of run ids with a 7 in them
        # other presets may follow as fuzzy matches of their longer descriptions, never above E7's
        assert {h for h in hits if "preset E7 " in h} == e7
        hits = await _palette_hits(pilot, "preset")
        for preset in presets:
            for scale in SCALES:
                assert f"Edit preset {preset.id.upper()} {scale} — {preset.title}" in hits
        assert len(hits) == len(set(hits))  # no entry twice
        hits = await _palette_hits(pilot, "quit")
        assert sum(1 for h in hits if h == "Quit") == 1


# -- live screen ----------------------------------------------------------------------------------

async def test_open_finished_run_shows_curves_table_and_log(template_ws):
    app = make_app(template_ws)
    seeds = ids_by_seed(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("enter")  # the newest run: seed 1
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        assert screen.run_id == seeds[1]
        agreement = screen.query_one("#plot-agreement", Curves)
        await wait_for(pilot, lambda: [len(xs) for _, xs, _ in agreement.series] == [2, 3],
                       what="train (epochs 1-2) and test (epochs 0-2) agreement curves")
        assert screen.query_one("#plot-acc", Curves).point_count() == 3
        assert screen.query_one("#plot-kl", Curves).point_count() == 3
        table = screen.query_one("#live-epochs", DataTable)
        await wait_for(pilot, lambda: table.row_count == 5, what="2 teacher + 3 student epoch rows")
        rows = table_rows(table)
        assert [r[0] for r in rows] == ["T1", "T1", "S", "S", "S"]
        record = RunStore(Workspace(template_ws)).get(seeds[1])
        headers = [str(c.label) for c in table.columns.values()]
        test_col = headers.index("test agr")
        assert rows[-1][test_col] == f"{record['metrics']['test_agreement']:.4f}"
        live = app.live[seeds[1]]
        assert isinstance(live.final, Done)
        await wait_for(pilot, lambda: all(c.drawn for c in screen.query(Curves)), what="the plots drawn")
        text = screen_text(app)
        assert "done" in text and "agreement (train agr, test agr)" in text and "test acc" in text
        assert "test agr 0." in text  # the latest metrics line
        # 100x30: all three charts, none squeezed
        for chart in ("#plot-agreement", "#plot-acc", "#plot-kl"):
            assert screen.query_one(chart).region.height >= 8, chart
        assert any("done" in line for line in live.log)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")


async def test_live_plots_carry_reference_lines(template_ws):
    """The accuracy plot has the teacher's test accuracy (the record's) as a line; the agreement
    plot a line at 1.0. Both are in the figure drawn, not only in the widget's data."""
    import re

    app = make_app(template_ws)
    seeds = ids_by_seed(template_ws)
    record = RunStore(Workspace(template_ws)).get(seeds[1])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        acc, agreement = screen.query_one("#plot-acc", Curves), screen.query_one("#plot-agreement", Curves)
        kl = screen.query_one("#plot-kl", Curves)
        await wait_for(pilot, lambda: acc.point_count() == 3 and acc.references, what="the accuracy curve")
        assert acc.references == [("teacher acc", record["metrics"]["teacher_test_acc"])]
        assert agreement.references == [("1.0", 1.0)]
        assert kl.references == []
        await wait_for(pilot, lambda: all(c.drawn for c in (acc, agreement, kl)), what="the plots drawn")
        # a horizontal line across the plot area: the y axis joins it (├) and so does the frame (┤)
        line = re.compile(r"├[^\n]*┤$", re.MULTILINE)
        for chart in (acc, agreement):
            assert line.search(chart.render().plain), chart.id
        assert not line.search(kl.render().plain)


async def test_live_view_at_80x24_switches_the_small_charts(template_ws):
    app = make_app(template_ws)
    seeds = ids_by_seed(template_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        acc, kl = screen.query_one("#plot-acc", Curves), screen.query_one("#plot-kl", Curves)
        await wait_for(pilot, lambda: all(c.drawn for c in screen.query(Curves) if c.display), what="the plots")
        agreement = screen.query_one("#plot-agreement", Curves)
        # agreement and one small chart, each tall enough to read; the other small chart waits for t
        assert agreement.region.height >= 10 and acc.region.height >= 10 and kl.region.height == 0
        assert screen.query_one("#live-epochs").region.height >= 4 and screen.query_one("#live-log").region.height >= 4
        text = await wait_for(pilot, lambda: (lambda t: t if "test acc" in t and "test agr 0." in t else None)(screen_text(app)),
                              what="the charts and the latest metrics on screen")
        assert f"{seeds[1].rsplit('-', 1)[1]} done  student ep 2/2  100%" in text
        assert all(len(line) <= 80 for line in text.splitlines())
        await pilot.press("t")
        await wait_for(pilot, lambda: kl.region.height >= 10 and acc.region.height == 0, what="the KL chart")
        await wait_for(pilot, lambda: kl.drawn and "test KL (nats)" in screen_text(app), what="the KL chart drawn")
        assert screen.run_id == seeds[1]


# -- compare --------------------------------------------------------------------------------------

async def test_marks_toggle_clear_and_do_not_leak_into_stop(ws):
    seeds = ids_by_seed(ws)
    _fake_running(ws, "260101-000000-f00d", name="going")  # newest: the first row
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=3)
        summary = app.screen.query_one("#runs-summary")
        await pilot.press("down", "space")  # marks seed 1 and moves down
        # (waited for: on a loaded machine the keys can land after the press returns)
        await wait_for(pilot, lambda: app.marked == [seeds[1]] and app.screen.current_id() == seeds[0],
                       what="seed 1 marked, the cursor on seed 0")
        await pilot.press("space")
        assert app.marked == [seeds[1], seeds[0]]
        assert "2 marked" in str(summary.render())
        assert rows_by_id(table)[seeds[1]]["status"] == "*done"
        await pilot.press("m")  # m toggles too: seed 0 unmarked (the cursor stays on the last row)
        assert app.marked == [seeds[1]]
        await pilot.press("u")
        await wait_for(pilot, lambda: app.marked == [] and "marked" not in str(summary.render()), what="u clears")
        assert rows_by_id(table)[seeds[1]]["status"] == "done"
        await pilot.press("up", "space", "space")
        assert app.marked == [seeds[1], seeds[0]]
        await pilot.press("escape")  # no filter set: esc clears the marks
        assert app.marked == []

        # compare keeps the marks; once cleared, stop acts on the run under the cursor
        await pilot.press("home")
        assert app.screen.current_id() == "260101-000000-f00d"
        await pilot.press("down", "space", "space", "c")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen, what="compare")
        assert screen.run_ids == [seeds[1], seeds[0]] and app.marked == [seeds[1], seeds[0]]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")
        await wait_for(pilot, lambda: "2 marked" in str(summary.render()), what="the marks still shown")
        await pilot.press("u")
        await wait_for(pilot, lambda: app.marked == [], what="u clears")
        await pilot.press("home", "s")
        stop_file = ws / "260101-000000-f00d" / "STOP"
        await wait_for(pilot, stop_file.exists, what="the stop request of the running run")
        await wait_for(pilot, lambda: any("stopping 1 run" in n.message for n in app._notifications),
                       what="how many it stopped")

        # with marks, stop acts on the marked runs and says when none of them runs
        await pilot.press("down", "space")
        await pilot.press("s")
        await wait_for(pilot, lambda: any("none of the 1 marked runs is running" in n.message
                                          for n in app._notifications), what="the marked-runs warning")

        await pilot.press("f1")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, what="help")
        rows = dict((what, keys) for keys, what in help_screen.rows)
        assert rows["Mark"] == "space / m" and rows["Unmark all"] == "u"
        notes = str(help_screen.query_one("#help-notes").render())
        assert "act on the marked runs if any are marked and shown" in notes
        assert "else on the run under the cursor" in notes and "Marks stay until cleared" in notes


async def test_delete_acts_on_marked_runs_and_says_how_many(ws):
    seeds = ids_by_seed(ws)
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("space", "space", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "these 2 runs" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: len(app.records) == 0, what="both gone")
        await wait_for(pilot, lambda: any("deleted 2 runs" in n.message for n in app._notifications), what="the count")
        assert app.marked == [] and not (ws / seeds[0]).exists()


async def test_mark_two_runs_compare_and_export(ws):
    app = make_app(ws)
    seeds = ids_by_seed(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("space", "m")
        await wait_for(pilot, lambda: app.marked == [seeds[1], seeds[0]], what="both marked")
        await pilot.press("c")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen,
                                what="compare")
        await wait_for(pilot, lambda: screen.comparison is not None, what="the comparison")
        table = screen.query_one(DataTable)
        headers = [str(c.label) for c in table.columns.values()]
        # columns say what differs (the seed), with the id's suffix under it
        assert headers == ["run", f"seed=1\n{seeds[1].rsplit('-', 1)[1]}", f"seed=0\n{seeds[0].rsplit('-', 1)[1]}"]
        keys = [r[0] for r in table_rows(table)]
        assert keys[0] == "seed" and "data.dataset" not in keys  # diff only is on: only the seed differs
        assert keys.index("test agr") > keys.index("metrics (last)")
        curves = screen.query_one("#compare-test", Curves)
        assert [len(xs) for _, xs, _ in curves.series] == [3, 3]
        assert [label for label, _, _ in curves.series] == ["seed=1", "seed=0"]
        await wait_for(pilot, lambda: curves.drawn, what="the overlaid curves drawn")
        # A capture can land mid-layout (the curves redraw as they size themselves): wait for the
        # whole screen, the table and the curves' title both on it.
        text = await wait_for(pilot, lambda: (lambda t: t if all(s in t for s in ("test agr", "seed=1",
                                                                                  seeds[1].rsplit("-", 1)[1])) else None)(screen_text(app)),
                              what="the comparison table and curves on screen")
        assert all(len(line) <= 80 for line in text.splitlines())

        await pilot.press("d")
        await wait_for(pilot, lambda: "data.dataset" in [r[0] for r in table_rows(table)], what="all rows")
        await pilot.press("a")
        await wait_for(pilot, lambda: screen.agg == "best" and "metrics (best)" in [r[0] for r in table_rows(table)],
                       what="agg best")
        await pilot.press("g")
        await wait_for(pilot, lambda: len(table.columns) == 2, what="one group column")
        group_label = str(list(table.columns.values())[1].label)
        assert "n=2 seeds" in group_label
        assert "±" in dict((r[0], r[1]) for r in table_rows(table))["test agr"]

        await pilot.press("x")
        reports = ws / "reports"
        csv_path = await wait_for(pilot, lambda: next(reports.glob("*.csv"), None), what="the CSV export")
        assert csv_path.read_text().startswith("section,key,")
        notes = [n.message for n in app._notifications]
        assert any(str(csv_path) in m for m in notes)
        await pilot.press("k")
        md_path = await wait_for(pilot, lambda: next(reports.glob("*.md"), None), what="the Markdown export")
        assert md_path.read_text().startswith("| group |")


async def test_compare_shows_a_run_whose_event_log_cannot_be_read_and_says_why(ws):
    seeds = ids_by_seed(ws)
    log = ws / seeds[0] / "events.jsonl"
    log.unlink()
    os.mkfifo(log)  # a FIFO planted as the log: neither read nor waited on
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("space", "m", "c")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen,
                                what="compare")
        await wait_for(pilot, lambda: screen.comparison is not None and len(screen.records) == 2,
                       what="both runs compared")
        curves = screen.query_one("#compare-test", Curves)
        assert sorted(len(xs) for _, xs, _ in curves.series) == [0, 3]  # only the readable run has points
        await wait_for(pilot, lambda: any("not a regular file" in n.message and str(log) in n.message
                                          for n in app._notifications), what="the reason, naming the log")


async def test_compare_more_than_six_runs_puts_the_labels_in_a_legend_table(ws):
    """Seven sweep points (copies of a real run with other temperatures, its events included):
    the plots carry no legend, a table under them names each curve by colour and marker."""
    from rich.table import Table
    from rich.text import Text

    from kdtui.analysis.labels import run_labels
    from kdtui.tui.screens.compare import LEGEND_IN_PLOT_MAX, MARKER_GLYPHS
    from kdtui.tui.widgets.curves import COLORS, MARKERS

    workspace = Workspace(ws)
    store = RunStore(workspace)
    base = store.get(ids_by_seed(ws)[0])
    records = []
    for i in range(7):
        spec = json.loads(json.dumps(base["spec"]))
        spec["distill"]["temperature"] = float(i + 1)
        records.append({**base, "id": f"260102-000000-c0d{i}", "name": f"tiny[distill.temperature={i + 1}]",
                        "spec": spec, "created": base["created"] + 100 + i, "pid": None})
    store.add_many(records)
    for record in records:
        shutil.copyfile(workspace.events_path(base["id"]), workspace.events_path(record["id"]))
    newest_first = [r["id"] for r in reversed(records)]
    labels = run_labels([store.get(i) for i in newest_first])
    assert len(set(labels.values())) == 7 and len(records) > LEGEND_IN_PLOT_MAX

    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=9)
        await pilot.press(*["space"] * 7)
        assert app.marked == newest_first
        await pilot.press("c")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen, what="compare")
        curves = screen.query_one("#compare-test", Curves)
        await wait_for(pilot, lambda: len(curves.series) == 7, what="seven curves")
        assert all(len(xs) == 3 for _, xs, _ in curves.series)  # the copied events: epochs 0-2
        assert not curves.legend and not screen.query_one("#compare-train", Curves).legend
        legend = screen.query_one("#compare-legend")
        await wait_for(pilot, lambda: not legend.has_class("hidden") and legend.region.height > 0,
                       what="the legend table shown")
        table = legend.content
        assert isinstance(table, Table)
        # the table's cells, row by row: one entry per run, in the curves' order
        by_column = [list(column.cells) for column in table.columns]
        entries = [by_column[c][row] for row in range(table.row_count) for c in range(len(by_column))
                   if isinstance(by_column[c][row], Text) and by_column[c][row].plain]
        assert len(entries) == 7
        for i, (entry, run_id) in enumerate(zip(entries, newest_first)):
            glyph = MARKER_GLYPHS.get(MARKERS[i % len(MARKERS)], MARKERS[i % len(MARKERS)])
            assert entry.plain == f"{glyph} {labels[run_id]}"
            assert entry.spans[0].style == COLORS[i % len(COLORS)]
            assert curves.series[i][0] == labels[run_id]
        text = screen_text(app)
        assert all(labels[run_id] in text for run_id in newest_first)


# -- editor ---------------------------------------------------------------------------------------

async def test_editor_validates_as_you_type_with_the_cli_message(template_ws):
    app = make_app(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("l")
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        name = editor.query_one(f"#{widget_id('name')}", Input)
        await wait_for(pilot, lambda: name.value == "digits-selfdistill", what="the digits preset")
        assert "valid" in editor.status_text

        epochs = editor.query_one(f"#{widget_id('teacher.epochs')}", Input)
        epochs.focus()
        epochs.value = ""
        await pilot.press("0")
        expected = None
        try:
            spec_from_dict({**editor.data}, source=editor.source)
        except SpecError as exc:
            expected = exc.message
        assert expected is not None and "teacher.epochs = 0: must be >= 1" in expected
        await wait_for(pilot, lambda: editor.status_text == f"error: {expected}", what="the error message")
        assert epochs.has_class("-invalid")
        assert expected in screen_text(app)

        await pilot.press("backspace", "5")
        await wait_for(pilot, lambda: "valid" in editor.status_text and "error" not in editor.status_text,
                       what="valid again")
        assert editor.data["teacher"]["epochs"] == 5 and not epochs.has_class("-invalid")

        # a sweep, and how many runs it expands to
        sweep = editor.query_one("#editor-sweep", TextArea)
        sweep.load_text('seed = [0, 1, 2]\n"distill.temperature" = [1.0, 4.0]\n')
        await wait_for(pilot, lambda: "6 runs" in editor.status_text, what="the sweep size")
        sweep.load_text("seed = [0, -1]\n")
        await wait_for(pilot, lambda: "sweep.'seed'[1] = -1" in editor.status_text, what="a bad sweep value")

        # the raw TOML tab shows the same spec, and is validated too
        sweep.load_text("")
        await pilot.pause(0.1)
        editor.query_one("#editor-tabs").active = "tab-toml"
        toml = editor.query_one("#editor-toml", TextArea)
        await wait_for(pilot, lambda: "epochs = 5" in toml.text, what="the TOML tab")
        toml.load_text(toml.text.replace('loss = "kl"', 'loss = "kll"'))
        await wait_for(pilot, lambda: "distill.loss = 'kll': unknown loss" in editor.status_text,
                       what="the TOML error")


async def test_editor_tabs_sweep_preview_and_unsaved_edits(template_ws):
    app = make_app(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("l")
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        await wait_for(pilot, lambda: "valid" in editor.status_text, what="the default spec")
        await pilot.press("escape")  # nothing edited: leaves at once
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="left without asking")

        await pilot.press("l")
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        await wait_for(pilot, lambda: "valid" in editor.status_text, what="the default spec")
        tabs = editor.query_one("#editor-tabs")
        await pilot.press("f3")
        await wait_for(pilot, lambda: tabs.active == "tab-sweep", what="the sweep tab (F3)")
        editor.query_one("#editor-sweep", TextArea).load_text('seed = [0, 1, 2]\n"distill.temperature" = [1.0, 4.0]\n')
        preview = editor.query_one("#editor-preview")
        await wait_for(pilot, lambda: str(preview.render()).startswith("6 runs:"), what="the sweep preview")
        lines = str(preview.render()).splitlines()
        assert lines[1].split() == ["1", "seed=0,", "distill.temperature=1.0"] and len(lines) == 7
        assert lines[6].split() == ["6", "seed=2,", "distill.temperature=4.0"]
        await pilot.press("f4")
        await wait_for(pilot, lambda: tabs.active == "tab-toml", what="the TOML tab (F4)")
        await pilot.press("f2")
        await wait_for(pilot, lambda: tabs.active == "tab-form", what="the form tab (F2)")
        await pilot.press("ctrl+pagedown")
        await wait_for(pilot, lambda: tabs.active == "tab-sweep", what="the next tab")

        await pilot.press("escape")  # edited: asks first
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert "Discard the unsaved edits" in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is editor, what="still editing")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="discarded")


async def test_editor_starts_from_a_past_run_and_saves(template_ws, tmp_path):
    app = make_app(template_ws)
    seeds = ids_by_seed(template_ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("e")  # edit a copy of the run under the cursor (seed 1)
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        seed = editor.query_one(f"#{widget_id('seed')}", Input)
        await wait_for(pilot, lambda: seed.value == "1", what="the run's spec")
        assert editor.data["teacher"]["batch_size"] == 64 and editor.source == f"run {seeds[1]}"
        target = tmp_path / "saved.toml"
        await pilot.press("ctrl+s")
        prompt = await wait_for(pilot, lambda: app.screen.query_one("#prompt-input", Input), what="save prompt")
        prompt.value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: target.exists(), what="the saved file")
        assert spec_from_dict(__import__("tomllib").loads(target.read_text())).seed == 1


async def test_editor_offers_the_workspace_spec_files(ws):
    """A spec saved in the workspace (its top folder or specs/) is offered by "start from", also
    when it was saved after the editor was first opened (the app keeps one editor)."""
    from textual.widgets import Select

    root = Workspace(ws).root
    mine = root / "mine.toml"
    mine.write_text(tiny_spec().replace('name = "tiny"', 'name = "mine"\nseed = 7'))
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("l")
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        select = editor.query_one("#editor-source", Select)

        def offered():
            options = {v: str(p) for p, v in select._options if v != Select.NULL}
            return options if any(v.startswith("run:") for v in options) else None
        options = await wait_for(pilot, offered, what="the start-from list")
        assert options[f"spec:{mine}"] == "file mine.toml"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")

        (root / "specs").mkdir()
        later = root / "specs" / "later.toml"
        later.write_text(tiny_spec())
        await pilot.press("l")
        await wait_for(pilot, lambda: app.screen is editor, what="the editor again")
        await wait_for(pilot, lambda: f"spec:{later}" in (offered() or {}), what="the spec saved since")
        assert offered()[f"spec:{later}"] == "file specs/later.toml" and f"spec:{mine}" in offered()
        select.value = f"spec:{mine}"
        seed = editor.query_one(f"#{widget_id('seed')}", Input)
        await wait_for(pilot, lambda: seed.value == "7" and editor.source == "mine.toml", what="the file loaded")
        assert editor.data["name"] == "mine"


# -- launching, following, stopping: real detached runs --------------------------------------------

async def _launch_from_editor(pilot, spec_path: Path) -> EditorScreen:
    app = pilot.app
    await pilot.press("l")
    editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
    box = editor.query_one("#editor-path", Input)
    box.focus()
    box.value = str(spec_path)
    await pilot.press("enter")
    await wait_for(pilot, lambda: editor.source == str(spec_path) and "valid" in editor.status_text,
                   what="the spec file loaded")
    await pilot.press("ctrl+l")
    await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back on the runs screen")
    return editor


async def test_launch_follow_to_done_and_runs_outlive_the_app(ws, tmp_path):
    spec_path = tmp_path / "two.toml"
    spec_path.write_text(tiny_spec(seeds=[0, 1]))  # same teachers as the template: reused
    app = make_app(ws)
    before = set(ids_by_seed(ws).values())
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=2)
        await _launch_from_editor(pilot, spec_path)
        await wait_for(pilot, lambda: len(app.records) == 4, what="the launched runs in the list")
        first, second = [r["id"] for r in app.records if r["id"] not in before]
        assert app.by_id[first]["pid"] != os.getpid()
        seen = set()

        def first_status():
            seen.add(status_of(app, first))
            return status_of(app, first) == "done"
        await wait_for(pilot, lambda: status_of(app, first) == "running" and seen.add("running") is None,
                       timeout=120, what="the first run running")
        await wait_for(pilot, lambda: app.live[first].phase and app.live[first].phase.phase == "student",
                       timeout=120, what="the student phase streamed")
        await wait_for(pilot, first_status, timeout=120, what="the first run done")
        assert "running" in seen
        row = await wait_for(pilot, lambda: (lambda r: r if r["status"] == "done" else None)(rows_by_id(table)[first]),
                             what="the row done")
        assert row["progress"] == "S 2/2" and row["test"].startswith(("0.", "1.0"))
        assert isinstance(app.live[first].final, Done)
        assert status_of(app, second) in ("queued", "running")
        await pilot.press("q")  # quitting leaves the runs going
        await wait_for(pilot, lambda: app._exit, what="the app to quit")
    # The app is gone; the second run goes on in its own process and lands in the registry.
    store = RunStore(Workspace(ws))
    record = poll_until(lambda: (r := store.get(second)) and r["status"] not in ("queued", "running") and r,
                        timeout=180, interval=0.2, what="the second run to finish after the app exited")
    assert record["status"] == "done" and 0 <= record["metrics"]["test_agreement"] <= 1

    # Reopening the app finds both, finished.
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=4)
        assert status_of(app, first) == status_of(app, second) == "done"


async def _launch_long_run(pilot, tmp_path: Path) -> str:
    """Launch a 200-epoch run from the editor and wait until its student epochs stream in."""
    app = pilot.app
    spec_path = tmp_path / "long.toml"
    spec_path.write_text(tiny_spec(student_epochs=200).replace('name = "tiny"', 'name = "long"\nseed = 0'))
    table = await loaded(pilot, rows=2)
    await _launch_from_editor(pilot, spec_path)
    await wait_for(pilot, lambda: len(app.records) == 3 and table.row_count == 3, what="the launched run")
    run_id = app.records[-1]["id"]
    for _ in range(3):
        if app.screen.current_id() == run_id:
            break
        await pilot.press("up")
    assert app.screen.current_id() == run_id
    await wait_for(pilot, lambda: status_of(app, run_id) == "running", timeout=120, what="running")
    await wait_for(pilot, lambda: app.live[run_id].phase.phase == "student" and app.live[run_id].epoch >= 1,
                   timeout=120, what="student epochs streaming")
    row = await wait_for(pilot, lambda: (lambda r: r if r["progress"].startswith("S ") else None)(rows_by_id(table)[run_id]),
                         what="the progress cell")
    assert row["progress"].endswith("/200")
    assert row["time"] and row["id"] == run_id.rsplit("-", 1)[1]
    return run_id


async def test_stop_a_running_run(ws, tmp_path):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        run_id = await _launch_long_run(pilot, tmp_path)
        await pilot.press("s")
        await wait_for(pilot, lambda: status_of(app, run_id) == "stopped", timeout=60, what="stopped")
        await wait_for(pilot, lambda: isinstance(app.live[run_id].final, Stopped),
                       what="the stopped event streamed")


@pytest.mark.slow
async def test_resume_a_stopped_run(ws, tmp_path):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        run_id = await _launch_long_run(pilot, tmp_path)
        await pilot.press("s")
        await wait_for(pilot, lambda: status_of(app, run_id) == "stopped", timeout=60, what="stopped")
        await pilot.press("r")
        await wait_for(pilot, lambda: status_of(app, run_id) in ("queued", "running"), timeout=30,
                       what="resumed")
        await wait_for(pilot, lambda: status_of(app, run_id) == "running" and app.live[run_id].final is None,
                       timeout=120, what="running again")
        await pilot.press("s")
        await wait_for(pilot, lambda: status_of(app, run_id) == "stopped", timeout=60, what="stopped again")


async def test_delete_asks_first(ws):
    app = make_app(ws)
    seeds = ids_by_seed(ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=2)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert seeds[1] in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="cancelled")
        assert (ws / seeds[1]).exists()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: len(app.records) == 1, what="the run gone from the list")
        assert not (ws / seeds[1]).exists()
        assert RunStore(Workspace(ws)).get(seeds[1]) is None


# -- streaming, with a fake run this process writes ------------------------------------------------

def _fake_running(ws: Path, run_id: str, name: str = "fake", epochs: int = 10) -> Path:
    workspace = Workspace(ws)
    workspace.create_run_dir(run_id)
    RunStore(workspace).add({"id": run_id, "name": name, "status": "running", "pid": os.getpid(), "host": HOST,
                             "started": time.time(), "spec": {"student": {"epochs": epochs}}})
    return workspace.events_path(run_id)


def _append(path: Path, events: list[dict]) -> None:
    with open(path, "a") as f:
        for event in events:
            f.write(json.dumps({"t": time.time(), **event}) + "\n")


async def test_streams_a_running_run_with_bounded_memory(tmp_path):
    ws = tmp_path / "ws"
    events = _fake_running(ws, "260101-000000-aaaa", epochs=10)
    _append(events, [{"type": "phase_start", "phase": "student", "index": 0, "total": 1, "epochs": 10,
                      "steps_per_epoch": 100, "reused": False}])
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot, rows=1)
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        curves = screen.query_one("#plot-agreement", Curves)
        for epoch in range(1, 4):
            _append(events, [{"type": "progress", "phase": "student", "index": 0, "epoch": epoch, "step": s,
                              "steps": 100} for s in range(1, 101)])
            _append(events, [{"type": "epoch", "phase": "student", "index": 0, "epoch": epoch,
                              "metrics": {"train_agreement": 0.5 + epoch / 10, "test_agreement": 0.4 + epoch / 10,
                                          "test_acc": 0.9, "test_kl": 0.1}}])
            await wait_for(pilot, lambda: len(curves.series[1][1]) == epoch, what=f"epoch {epoch} on the curve")
        text = screen_text(app)
        assert "student epoch 3/10" in text and "ETA " in text  # elapsed and time left in the header
        live = app.live["260101-000000-aaaa"]
        assert live.fraction() == (300.0, 1000.0)
        # Thousands of log lines later, the app still keeps only the last LOG_LINES of them.
        _append(events, [{"type": "log", "message": f"line {i}"} for i in range(3 * LOG_LINES)])
        await wait_for(pilot, lambda: live.log_total >= 3 * LOG_LINES + 4, what="the log lines")
        assert len(live.log) == LOG_LINES and live.log[-1].endswith(f"line {3 * LOG_LINES - 1}")
        assert len(live.rows) == 3
        await pilot.press("escape")
        await wait_for(pilot, lambda: "S 3/10" in [r[3].strip() for r in table_rows(table)], what="progress cell")
        # The run fails: the status comes from the registry, the reason from the stream.
        _append(events, [{"type": "failed", "error": "loss is NaN at epoch 4 (try a lower lr)", "phase": "student",
                          "epoch": 4, "step": 7}])
        RunStore(Workspace(ws)).update("260101-000000-aaaa", status="failed", error="loss is NaN at epoch 4 (try a lower lr)")
        await wait_for(pilot, lambda: status_of(app, "260101-000000-aaaa") == "failed", what="failed")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "failed: loss is NaN at epoch 4" in screen_text(app), what="the error shown")


async def test_run_started_from_the_shell_appears(tmp_path):
    ws = tmp_path / "ws"
    Workspace(ws)
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, rows=0)
        assert "press l to launch one" in screen_text(app)
        _fake_running(ws, "260101-000000-bbbb", name="from-the-shell")
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the new run")
        assert table_rows(table)[0][1].strip() == "from-the-shell"


async def test_no_color_and_ctrl_c(template_ws, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(template_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=2)
        assert app.no_color
        assert "status" in screen_text(app)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app._exit, what="ctrl+c to quit")


def test_run_app_passes_no_mouse(monkeypatch, tmp_path):
    import kdtui.tui.app as tui_app
    from kdtui.tui import run_app

    calls = []
    monkeypatch.setattr(tui_app.KdtuiApp, "run", lambda self, **kwargs: calls.append((self.workspace, kwargs)))
    run_app(str(tmp_path), mouse=False)
    assert calls == [(Workspace(tmp_path), {"mouse": False})]


def test_app_does_not_import_torch(template_ws):
    code = (
        "import asyncio, sys\n"
        "from kdtui.tui.app import KdtuiApp\n"
        "async def main():\n"
        f"    app = KdtuiApp({str(template_ws)!r})\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n"
        "        while not app.loaded: await pilot.pause(0.05)\n"
        "        await pilot.press('enter')\n"
        "        await pilot.pause(0.5)\n"
        "        await pilot.press('escape', 'l')\n"
        "        await pilot.pause(0.5)\n"
        "asyncio.run(main())\n"
        "assert 'torch' not in sys.modules, 'the app imported torch'\n"
        "import kdtui.tui.app\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_worker_env())
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
