"""What a daily user of the app asked for (issue 18, builds 7, 8, 12 and the app side of 6): copy a run's
id and see its folder, redo a finished run with one change, footers that fit 80 columns, toasts that
wait under a dialog, a sort kept across starts, tiny presets described as tiny, an editor that follows
a path load, F3 into the sweep box and each field's help, notes and tags in the runs table.

Driven through Textual's Pilot on a made-up workspace (tests/test_terminal_snapshots.py's three
finished runs: snap · τ=1.0 seed=0, τ=4.0 seed=0, τ=4.0 seed=1), so no run is trained here.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, Select, TextArea  # noqa: E402
from textual.widgets._toast import Toast  # noqa: E402

from kdtui.core.redo import redo_spec  # noqa: E402
from kdtui.core.registry import RunStore  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402
from kdtui.runs.executors.launcher import QueueExecutor  # noqa: E402
from kdtui.tui.screens.compare import CompareScreen  # noqa: E402
from kdtui.tui.screens.editor import EditorScreen, widget_id  # noqa: E402
from kdtui.tui.screens.help import HelpScreen  # noqa: E402
from kdtui.tui.screens.live import LiveScreen  # noqa: E402
from kdtui.tui.screens.log import LogScreen  # noqa: E402
from kdtui.tui.screens.queue import QueueScreen  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402
from tests.test_terminal_snapshots import RUNS, _make_workspace  # noqa: E402
from tests.test_tui import loaded, make_app, rows_by_id, screen_text, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NEWEST = RUNS[-1][0]   # the first row (newest first): snap · τ=4.0 seed=1


@pytest.fixture
def ws(tmp_path) -> Path:
    root = tmp_path / "ws"
    _make_workspace(root)
    return root


def messages(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def on_screen(pilot, kind):
    app = pilot.app
    return await wait_for(pilot, lambda: isinstance(app.screen, kind) and app.screen, what=kind.__name__)


# -- build 12: the footer at 80x24 -----------------------------------------------------------------

def footer_line(app) -> str:
    """The footer's keys: the last line of the screen, left of the palette's key."""
    return screen_text(app).splitlines()[-1].split("▏")[0]


async def footer_fits(pilot) -> list[str]:
    """The shown keys whose label the footer lacks whole, once the footer has drawn (it recomposes a
    frame after its screen's bindings change)."""
    app = pilot.app
    keys = await wait_for(pilot, lambda: "f1 Help" in footer_line(app) and footer_line(app), what="the footer")
    shown = {b.binding.description for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}
    assert shown
    return sorted(description for description in shown if f" {description}  " not in keys + "  ")


async def test_every_screen_s_footer_shows_its_labels_whole_at_80x24(ws):
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        assert await footer_fits(pilot) == []
        for keys, screen in ((("enter",), LiveScreen), (("v",), LogScreen), (("escape", "escape"), RunsScreen),
                             (("w",), QueueScreen), (("escape",), RunsScreen),
                             (("space", "space", "c"), CompareScreen)):
            await pilot.press(*keys)
            await on_screen(pilot, screen)
            await pilot.pause(0.2)
            assert await footer_fits(pilot) == [], screen.__name__
        await pilot.press("escape")
        await on_screen(pilot, RunsScreen)
        await pilot.press("l")
        editor = await on_screen(pilot, EditorScreen)
        await wait_for(pilot, lambda: "valid" in editor.status_text, what="the default spec")
        assert await footer_fits(pilot) == []


# -- build 8: copy and locate ------------------------------------------------------------------------

async def test_y_copies_the_id_and_shows_it_with_the_run_folder_on_the_runs_and_live_screens(ws):
    app = make_app(ws)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        table = await loaded(pilot, rows=len(RUNS))
        oldest = RUNS[0][0]
        table.move_cursor(row=app.screen.visible_ids.index(oldest))
        await wait_for(pilot, lambda: app.screen.current_id() == oldest, what="the cursor on the oldest run")
        await pilot.press("y")
        folder = str(Workspace(ws).run_dir(oldest))
        await wait_for(pilot, lambda: any(oldest in m and folder in m for m in messages(app)), what="the toast")
        assert app.clipboard == oldest   # what Textual sent by OSC 52
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert oldest in shown and "folder:" in shown

        app.clear_notifications()
        await pilot.press("home", "enter")
        live = await on_screen(pilot, LiveScreen)
        assert live.run_id == NEWEST
        await pilot.press("y")
        folder = str(Workspace(ws).run_dir(NEWEST))
        await wait_for(pilot, lambda: any(NEWEST in m and folder in m for m in messages(app)), what="the live toast")
        assert app.clipboard == NEWEST
        await pilot.press("f1")
        help_screen = await on_screen(pilot, HelpScreen)
        assert dict((what, keys) for keys, what in help_screen.rows)["Copy id, show folder"] == "y"


# -- build 12: toasts never cover a dialog ---------------------------------------------------------------

async def test_a_toast_raised_under_a_dialog_waits_for_it_to_close(ws):
    app = make_app(ws)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await loaded(pilot, rows=len(RUNS))
        runs = app.screen
        app.notify("launched 3 runs in the background", markup=False)
        await wait_for(pilot, lambda: runs.query(Toast), what="the toast on the runs screen")
        await pilot.press("f1")
        help_screen = await on_screen(pilot, HelpScreen)
        app.notify("a run finished meanwhile", timeout=0.5, markup=False)
        await pilot.pause(1.0)   # longer than its time: it must still come, after the dialog
        assert not help_screen.query(Toast)   # nothing over the dialog
        text = screen_text(app)
        assert "Keys: runs screen" in text and "a run finished meanwhile" not in text
        await pilot.press("escape")
        await on_screen(pilot, RunsScreen)
        await wait_for(pilot, lambda: "a run finished meanwhile" in screen_text(app), what="the held toast shown")


# -- build 12: the sort is kept in the workspace's settings ------------------------------------------------

async def test_the_sort_is_kept_in_settings_toml_across_starts(ws):
    settings = ws / "settings.toml"
    settings.write_text("[queue]\nslots_per_gpu = 2\n")
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        await pilot.press("o")  # by status
        await wait_for(pilot, lambda: tomllib.loads(settings.read_text()).get("app", {}).get("runs_sort") == "status",
                       what="the sort written")
        await pilot.press("O")
        await wait_for(pilot, lambda: tomllib.loads(settings.read_text())["app"].get("runs_sort_reverse") is True,
                       what="reversed, written")
    data = tomllib.loads(settings.read_text())
    assert data["queue"] == {"slots_per_gpu": 2}   # the file's other settings kept
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await loaded(pilot, rows=len(RUNS))
        screen = app.screen
        assert (screen.sort_key, screen.sort_reverse) == ("status", True)
        assert "status▼" in screen_text(app).splitlines()[1] and "sorted by status▼" in screen_text(app)
        await pilot.press(*"oooooooo")  # past the last column: newest first again
        await wait_for(pilot, lambda: screen.sort_key is None, what="newest first")
        await wait_for(pilot, lambda: tomllib.loads(settings.read_text())["app"]["runs_sort"] == "", what="written")
        assert [row.key.value for row in table.ordered_rows] == [r[0] for r in reversed(RUNS)]


async def test_a_settings_file_that_is_not_toml_is_left_alone(ws):
    settings = ws / "settings.toml"
    settings.write_text("[queue\n")
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        assert app.screen.sort_key is None
        await pilot.press("o")
        await wait_for(pilot, lambda: any("the sort is not kept" in m and "settings.toml" in m for m in messages(app)),
                       what="the warning")
    assert settings.read_text() == "[queue\n"


# -- build 12: tiny presets described as tiny -------------------------------------------------------------

async def test_the_palette_describes_tiny_presets_by_their_tiny_files(ws):
    from textual.command import CommandList

    from kdtui.core.presets import get_preset

    e2 = get_preset("e2")
    tiny_varies, paper_varies = e2.header("tiny")["varies"], e2.header("paper")["varies"]
    assert "GAN" in paper_varies and "GAN" not in tiny_varies   # the files differ, as the issue says
    app = make_app(ws)
    async with app.run_test(size=(160, 45)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        await pilot.press("ctrl+p")
        palette = await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette" and app.screen,
                                 what="the palette")
        await pilot.press("e", "2")
        commands = palette.query_one(CommandList)

        def entries() -> dict[str, str]:
            out = {}
            for option in commands.options:
                title, _, help_text = str(getattr(option.prompt, "plain", option.prompt)).partition("\n")
                out[title] = " ".join(help_text.split())
            return out if any("E2 tiny" in title for title in out) else {}
        found = await wait_for(pilot, entries, what="the E2 entries")
        tiny = found[f"Launch preset E2 tiny — {e2.title}"]
        paper = found[f"Launch preset E2 paper — {e2.title}"]
        assert "tiny scale" in tiny and " ".join(tiny_varies.split()) in tiny and "GAN" not in tiny
        assert "paper scale" in paper and "GAN" in paper
        await pilot.press("escape")


# -- build 12: the editor ----------------------------------------------------------------------------------

async def test_editor_source_follows_a_path_load_and_f_keys_focus_their_tab(ws, tmp_path):
    spec = tmp_path / "mine.toml"
    spec.write_text('name = "mine"\nseed = 7\n[data]\ndataset = "digits"\n')
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        await pilot.press("l")
        editor = await on_screen(pilot, EditorScreen)
        await wait_for(pilot, lambda: "valid" in editor.status_text, what="the default spec")
        select = editor.query_one("#editor-source", Select)
        await wait_for(pilot, lambda: select.value == "preset:digits", what="the picker names the preset")
        box = editor.query_one("#editor-path", Input)
        box.focus()
        box.value = str(spec)
        await pilot.press("enter")
        await wait_for(pilot, lambda: editor.data.get("name") == "mine", what="the file loaded")
        await wait_for(pilot, lambda: select.value == f"spec:{spec.resolve()}", what="the picker names the file")
        assert "file mine.toml" in screen_text(app)
        # picking the preset again reloads it (the picker no longer believes it is loaded)
        select.value = "preset:digits"
        await wait_for(pilot, lambda: editor.data.get("name") == "digits-selfdistill", what="the preset again")

        tabs = editor.query_one("#editor-tabs")
        await pilot.press("f3")
        await wait_for(pilot, lambda: tabs.active == "tab-sweep" and app.focused is editor.query_one("#editor-sweep"),
                       what="F3: the sweep box focused")
        await pilot.press(*"seed = [0, 1]")
        await wait_for(pilot, lambda: editor.data.get("sweep") == {"seed": [0, 1]}, what="typed into the sweep")
        await pilot.press("f4")
        await wait_for(pilot, lambda: app.focused is editor.query_one("#editor-toml", TextArea), what="F4: the TOML")
        await pilot.press("f2")
        await wait_for(pilot, lambda: app.focused is editor.query_one(f"#{widget_id('name')}"), what="F2: the form")
        # from a field, the next tab (ctrl+pagedown) takes the cursor along: left in the form, it moved
        # to the next field and the tabs followed it back to the form
        await pilot.press("ctrl+pagedown")
        await pilot.pause(0.3)
        assert tabs.active == "tab-sweep" and app.focused is editor.query_one("#editor-sweep")
        await pilot.press("f2")
        await wait_for(pilot, lambda: app.focused is editor.query_one(f"#{widget_id('name')}"), what="F2 again")
        await pilot.click("#--content-tab-tab-toml")   # a click: the tabs bar takes the focus, the tab stays
        await pilot.pause(0.5)
        assert tabs.active == "tab-toml"


def spec_doc_meaning(path: str) -> str:
    """The meaning column of docs/spec.md's row for `path` (the reference the help must agree with)."""
    for line in (REPO / "docs" / "spec.md").read_text().splitlines():
        if line.startswith(f"| `{path}` |"):
            return line.rstrip(" |").rsplit(" | ", 1)[1]
    raise AssertionError(f"{path} not in docs/spec.md")


async def test_each_editor_field_shows_its_help_when_focused(ws):
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        await pilot.press("l")
        editor = await on_screen(pilot, EditorScreen)
        await wait_for(pilot, lambda: "valid" in editor.status_text, what="the default spec")
        box = editor.query_one("#editor-field-help")
        for path in ("distill.temperature", "data.teacher_subset", "student.model"):
            editor.query_one(f"#{widget_id(path)}").focus()
            await wait_for(pilot, lambda: str(box.render()).startswith(f"{path}: "), what=f"{path}'s help")
            assert spec_doc_meaning(path) in " ".join(str(box.render()).split())
        assert "One of: " in str(box.render()) and "lenet5" in str(box.render())  # a choice field lists them
        await pilot.press("f3")
        await wait_for(pilot, lambda: str(box.render()).startswith("sweep: "), what="the sweep's help")
        assert spec_doc_meaning("sweep") in " ".join(str(box.render()).split())
        editor.query_one("#editor-path").focus()
        await wait_for(pilot, lambda: str(box.render()).strip() == "", what="no help off the fields")


# -- build 7: redo with one change -------------------------------------------------------------------------

async def test_a_finished_run_redone_with_one_change_is_a_new_run(ws, monkeypatch):
    monkeypatch.setattr(QueueExecutor, "start_workers", lambda self: [])  # registered and queued, not trained
    store = RunStore(Workspace(ws))
    spec_before = (ws / NEWEST / "spec.toml").read_text()
    expected = redo_spec(tomllib.loads(spec_before), ["distill.temperature=8"], source="--set")  # as the CLI does
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        assert app.screen.current_id() == NEWEST and app.by_id[NEWEST]["status"] == "done"
        await pilot.press("e")
        editor = await on_screen(pilot, EditorScreen)
        temperature = editor.query_one(f"#{widget_id('distill.temperature')}", Input)
        await wait_for(pilot, lambda: temperature.value == "4.0" and editor.source == f"run {NEWEST}",
                       what="the run's resolved spec")
        temperature.focus()
        await pilot.press("ctrl+u", "8")
        await wait_for(pilot, lambda: "valid" in editor.status_text and editor.data["distill"]["temperature"] == 8,
                       what="the change")
        await pilot.press("ctrl+l")
        await on_screen(pilot, RunsScreen)
        await wait_for(pilot, lambda: len(store.all()) == len(RUNS) + 1, what="the new run registered")
    new = next(r for r in store.all(details=True) if r["id"] not in {run[0] for run in RUNS})
    assert new["name"] == expected.name == "snap[distill.temperature=8,seed=1]"
    assert new["spec"]["distill"]["temperature"] == 8.0 and new["spec"]["seed"] == 1
    # the whole spec is the one `kdtui run --from ID --set distill.temperature=8` registers
    assert new["spec"] == expected.resolved().model_dump(mode="json")
    assert new["status"] == "queued"
    assert store.get(NEWEST)["status"] == "done" and (ws / NEWEST / "spec.toml").read_text() == spec_before


# -- build 6 (app side): notes and tags in the table, an empty note clears it ------------------------------

async def test_notes_and_tags_show_in_the_name_column_and_an_empty_note_clears(ws):
    store = RunStore(Workspace(ws))
    app = make_app(ws)
    async with app.run_test(size=(160, 45), notifications=True) as pilot:
        table = await loaded(pilot, rows=len(RUNS))
        screen = app.screen
        await pilot.press("n", *"best so far", "enter")
        await wait_for(pilot, lambda: store.get(NEWEST).get("note") == "best so far", what="the note")
        await pilot.press("t", *"+baseline", "enter")
        await wait_for(pilot, lambda: store.get(NEWEST).get("tags") == ["baseline"], what="the tag")
        await wait_for(pilot, lambda: rows_by_id(table)[NEWEST]["name"] == "snap · τ=4.0 seed=1  #baseline  best so far",
                       what="the row shows both")
        assert "#baseline  best so far" in screen_text(app)
        await pilot.press("slash", *"baseline", "enter")   # a bare word finds the tag
        await wait_for(pilot, lambda: screen.visible_ids == [NEWEST], what="the filter by word")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(screen.visible_ids) == len(RUNS), what="the filter cleared")
        await pilot.press("n")
        prompt = await wait_for(pilot, lambda: app.screen.query_one("#prompt-input", Input), what="the prompt")
        assert prompt.value == "best so far"
        await pilot.press("ctrl+u", "enter")
        await wait_for(pilot, lambda: not store.get(NEWEST).get("note"), what="the note cleared")
        await wait_for(pilot, lambda: rows_by_id(table)[NEWEST]["name"] == "snap · τ=4.0 seed=1  #baseline",
                       what="the row without the note")
        assert any("note cleared" in m for m in messages(app))
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:   # narrower: the label stays whole, the rest is cut
        table = await loaded(pilot, rows=len(RUNS))
        name = rows_by_id(table)[NEWEST]["name"]
        assert name.startswith("snap · τ=4.0 seed=1  #bas") and name.endswith("…")
        summary = app.screen.query_one("#runs-summary")
        assert str(summary.render()) == "3 runs · 0 active · #baseline"   # the highlighted run's, in full
        await pilot.press("down")
        await wait_for(pilot, lambda: str(summary.render()) == "3 runs · 0 active", what="a run without any")
