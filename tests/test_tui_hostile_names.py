"""Names and values a user may type, driven through every screen and dialog of the app.

A workspace (real registry, run folders, events.jsonl and spec.toml files, made with the project's
own RunStore, RunQueue and EventWriter) holds runs named, and swept over values, like markup
(`[bold]x`, `[/]`, `[@click=app.quit]x`, a link), sweep points (`a[seed=0,x=1]`), a backslash
before a bracket, emoji, CJK, right-to-left text and a 200-character name. Pilot opens the runs,
live, log, compare, queue, help, editor (and its source list) screens, the palette, and the delete,
stop and discard dialogs, at 80x24 and 100x30: nothing raises, each name is shown as it is, no link
or action is made from one, and the app keeps running.
"""
from __future__ import annotations

import io
import time

import pytest
import tomli_w
from rich.console import Console

from kdtui.analysis.labels import point_label
from kdtui.core.eventlog import EventWriter
from kdtui.core.names import printable
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import RunQueue
from tests.cli_helpers import fake_run
from tests.test_tui import HOST, loaded, make_app, screen_text, wait_for

pytest.importorskip("textual")

from textual.widgets import DataTable, OptionList, RichLog, Select, Static  # noqa: E402

from kdtui.tui.screens.compare import CompareScreen  # noqa: E402
from kdtui.tui.screens.editor import EditorScreen  # noqa: E402
from kdtui.tui.screens.help import HelpScreen  # noqa: E402
from kdtui.tui.screens.live import LiveScreen  # noqa: E402
from kdtui.tui.screens.log import LogScreen  # noqa: E402
from kdtui.tui.screens.modals import ConfirmScreen  # noqa: E402
from kdtui.tui.screens.queue import QueueScreen  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402

# The two sweep points of the crashes (the delete dialog; the editor's source list).
SWEEP_POINT = "digits-temp[seed=0,distill.temperature=8.0]"
E7_POINT = "e7-interpolation-tiny[seed=0,student.init_lambda=1.0]"
QUIT_LINK = "[@click=app.quit]x"
HOSTILE = [
    "[bold]x", "a[seed=0,x=1]", "[/]", QUIT_LINK, "[link=https://example.com]x[/link]", "\\[",
    "emoji 🧪🚀 run", "蒸馏实验 CJK", "שלום עולם مرحبا", "rlo \u202eevil", "n" * 190 + "[/]ending!",
    SWEEP_POINT, E7_POINT,
]
LONG = HOSTILE[10]


def run_id_of(i: int) -> str:
    return f"260101-0000{i:02d}-{i:04x}"


@pytest.fixture
def hostile_ws(tmp_path):
    """A finished run per hostile name (its spec swept over the name as a value too: `data.root`),
    its log lines and error naming it; one run waits in the queue, one has failed."""
    ws = tmp_path / "ws"
    ws.mkdir()
    ids = {}
    for i, name in enumerate(HOSTILE):
        run_id = run_id_of(i)
        status = "failed" if name == QUIT_LINK else "done"
        spec = {"name": name, "seed": i % 2, "data": {"dataset": "digits", "root": name},
                "distill": {"temperature": float(i)}}
        fake_run(ws, run_id, status=status, name=name, spec=spec, created=time.time() - 100 + i,
                 **({"error": f"boom in {name}"} if status == "failed" else {}))
        (ws / run_id / "spec.toml").write_text(tomli_w.dumps(spec))
        with EventWriter(ws / run_id / "events.jsonl") as writer:
            writer.write({"type": "log", "message": f"note on {name}"})
            if status == "failed":
                writer.write({"type": "failed", "error": f"boom in {name}", "phase": "student", "epoch": 1})
        ids[name] = run_id
    queued = run_id_of(len(HOSTILE))
    store = RunStore(Workspace(ws))
    store.add({"id": queued, "name": f"queued {QUIT_LINK}", "status": "queued", "host": HOST,
               "created": time.time(), "spec": {"name": f"queued {QUIT_LINK}", "student": {"epochs": 2}}})
    queue = RunQueue(Workspace(ws))
    with queue.locked():
        queue.enqueue(store, [queued], gpus=[])
    ids[f"queued {QUIT_LINK}"] = queued
    return ws, ids


# -- what the terminal shows ----------------------------------------------------------------------

def segments(app) -> list:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    return list(console.render(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)))


def assert_no_link_or_action(app) -> None:
    """No cell of the screen links anywhere or runs an action taken from a name."""
    for segment in segments(app):
        style = segment.style
        if style is None:
            continue
        assert not style.link, f"a link in {segment.text!r}"
        click = (style.meta or {}).get("@click")
        assert not click or "quit" not in str(click), f"an action in {segment.text!r}: {click}"


def shows(shown: str, name: str) -> bool:
    """`shown` is `name`'s label (escaped by `printable`; a sweep point's `a · seed=0 x=1`), whole or
    cut to the width shown (the independent check of the cut is tests/test_tui_labels.py)."""
    shown, name = shown.strip(), printable(name)
    return shown in (point_label(name), point_label(name, len(shown)))


def plain_of(widget) -> str:
    rendered = widget.render()
    return str(getattr(rendered, "plain", rendered))


def toasts(app) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


def on_row(app, run_id: str) -> None:
    screen = app.screen
    assert isinstance(screen, RunsScreen)
    index = screen.visible_ids.index(run_id)
    screen.fill_rows(index)
    screen.query_one(DataTable).move_cursor(row=index, animate=False)


async def back_home(pilot) -> None:
    pilot.app.go_home()
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), what="the runs screen")


# -- the test -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_hostile_names_are_shown_as_text_on_every_screen(hostile_ws, size):
    ws, ids = hostile_ws
    app = make_app(ws)
    async with app.run_test(size=size) as pilot:
        table = await loaded(pilot, rows=len(ids))
        await pilot.pause()

        # Runs: every name cell shows its name (cut in the middle at most), nothing parsed.
        screen = app.screen
        screen.fill_rows(len(ids))
        for name, run_id in ids.items():
            cell = table.get_cell(run_id, "name")
            assert shows(cell.plain, name), (name, cell.plain)
        text = screen_text(app)
        for name in ("[bold]x", "[/]", "\\["):
            assert f" {name} " in text, name
        assert_no_link_or_action(app)

        # Queue: the waiting run's name, as it is.
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen.state is not None,
                       what="the queue")
        await pilot.pause()
        assert f"queued {QUIT_LINK}" in screen_text(app)
        assert_no_link_or_action(app)
        await back_home(pilot)

        # Delete on a sweep point (the first crash): the dialog names it; yes deletes it.
        on_row(app, ids[SWEEP_POINT])
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete dialog")
        await pilot.pause()
        dialog = plain_of(app.screen.query_one(".dialog-text", Static))
        assert f"{ids[SWEEP_POINT]} (digits-temp · seed=0 τ=8.0)" in dialog  # by its label
        assert_no_link_or_action(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: ids[SWEEP_POINT] not in app.by_id, what="the sweep point deleted")

        # Delete on five marked runs with the worst names: all named in the dialog; no deletes them.
        worst = [QUIT_LINK, "[link=https://example.com]x[/link]", "\\[", "rlo \u202eevil", LONG]
        for name in worst:
            on_row(app, ids[name])
            await pilot.press("m")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete dialog")
        await pilot.pause()
        dialog = plain_of(app.screen.query_one(".dialog-text", Static))
        for name in worst:
            assert f"{ids[name]} ({printable(name)})" in dialog, name
        assert_no_link_or_action(app)
        await pilot.click(".dialog-text")  # a link made from `[@click=app.quit]` would quit here
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the dialog closed")
        assert all(ids[name] in app.by_id for name in worst)
        await pilot.press("u")

        # Live view of the failed run: its name, its error and its log line, as they are.
        on_row(app, ids[QUIT_LINK])
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen), what="the live view")
        live = app.screen
        await wait_for(pilot, lambda: QUIT_LINK in plain_of(live.query_one("#live-info", Static)),
                       what="the live header")
        await wait_for(pilot, lambda: f"boom in {QUIT_LINK}" in plain_of(live.query_one("#live-error", Static)),
                       what="the error box")
        log = live.query_one("#live-log", RichLog)
        await wait_for(pilot, lambda: any(f"note on {QUIT_LINK}" in line.text for line in log.lines),
                       what="the log line")
        assert_no_link_or_action(app)

        # Its event log screen.
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.lines, what="the log")
        rows = [str(app.screen.query_one(DataTable).get_row_at(i)[0]) for i in range(len(app.screen.lines))]
        assert any(f"note on {QUIT_LINK}" in row for row in rows), rows
        assert any(f"boom in {QUIT_LINK}" in row for row in rows), rows
        assert_no_link_or_action(app)
        await back_home(pilot)

        # Compare three runs swept over hostile `data.root` values: the values, as they are.
        compared = ["[bold]x", "a[seed=0,x=1]", "\\["]
        for name in compared:
            on_row(app, ids[name])
            await pilot.press("m")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison,
                       what="the comparison")
        await pilot.pause()
        grid = app.screen.query_one(DataTable)
        cells = [str(cell) for i in range(grid.row_count) for cell in grid.get_row_at(i)]
        for name in compared:
            assert name in cells, (name, cells)
        assert_no_link_or_action(app)
        await back_home(pilot)

        # Help.
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.press("escape")

        # The palette lists "Open run <name>" entries as they are.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press("o", "p", "e", "n")
        options = app.screen.query_one(OptionList)
        await wait_for(pilot, lambda: options.option_count >= 5, what="the palette's hits")
        await pilot.pause()
        prompts = [str(getattr(options.get_option_at_index(i).prompt, "plain", "")) for i in range(options.option_count)]
        assert any(QUIT_LINK in p for p in prompts), prompts
        assert any("[bold]x" in p for p in prompts), prompts
        assert_no_link_or_action(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the palette closed")

        # Stop the queued run: the notice names it; it is stopped (the compare's marks cleared first).
        await pilot.press("u")
        await wait_for(pilot, lambda: not app.marked, what="the marks cleared")
        on_row(app, ids[f"queued {QUIT_LINK}"])
        await pilot.press("s")
        await wait_for(pilot, lambda: (app.by_id.get(ids[f"queued {QUIT_LINK}"]) or {}).get("status") == "stopped",
                       what="the queued run stopped")
        await wait_for(pilot, lambda: "removed from the queue" in toasts(app), what="the stop notice")
        assert_no_link_or_action(app)

        # The editor from the E7 sweep point (the second crash): its source list, opened,
        # shows every run's name; F3 then typing a sweep with spaces; esc asks to discard.
        on_row(app, ids[E7_POINT])
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen), what="the editor")
        editor = app.screen
        select = editor.query_one("#editor-source", Select)
        await wait_for(pilot, lambda: select.value == f"run:{ids[E7_POINT]}", what="the source list")
        select.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: select.expanded, what="the source list open")
        overlay = select.query_one(OptionList)
        await pilot.pause()
        await pilot.press("end")
        await pilot.pause()
        prompts = [str(getattr(overlay.get_option_at_index(i).prompt, "plain", ""))
                   for i in range(overlay.option_count)]
        for name, run_id in ids.items():
            if run_id in app.by_id:
                assert f"run {run_id} — {printable(name)}" in prompts, name
        assert_no_link_or_action(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not select.expanded, what="the source list closed")
        # As in the issue: F3, then typing `seed = …`: F3 puts the cursor in the sweep box (it used
        # to leave it on the source list, where the space opened the list again).
        await pilot.press("f3", "s", "e", "e", "d", "space")
        await pilot.pause()
        assert_no_link_or_action(app)
        sweep = editor.query_one("#editor-sweep")
        assert not select.expanded and app.focused is sweep and sweep.text == "seed "
        sweep.load_text("")
        sweep.insert("seed = [0, 1]\n")
        await wait_for(pilot, lambda: "2 runs" in editor.status_text, what="the sweep typed in")
        assert editor.edited
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the discard dialog")
        assert "Discard the unsaved edits" in plain_of(app.screen.query_one(".dialog-text", Static))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back on the runs")
        assert_no_link_or_action(app)

        assert app.is_running and app.return_code is None  # nothing quit it
