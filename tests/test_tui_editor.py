"""The spec editor as built for a quick open: made out of sight once the runs are listed, a label
column drawn by one widget, filling that is not editing. Driven through Textual's Pilot on a made-up
workspace (tests/test_terminal_snapshots.py's three finished runs), so no run is trained here.
"""
from __future__ import annotations

import threading

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytest.importorskip("textual")

from textual.widgets import Input, Select  # noqa: E402

from kdtui.core.spec import FIELD_PATHS, spec_from_dict  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402
from kdtui.tui.screens.editor import EditorScreen, FormLabels, widget_id  # noqa: E402
from kdtui.tui.screens.modals import ConfirmScreen  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402
from tests.test_terminal_snapshots import RUNS, _make_workspace  # noqa: E402
from tests.test_tui import loaded, make_app, screen_text, wait_for  # noqa: E402

FIELDS = ["name", *FIELD_PATHS]   # the form's rows, in the spec's order


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    _make_workspace(root)
    return root


def run_spec(ws, run_id: str) -> dict:
    """The run's spec as its folder keeps it (what "Edit copy" must show)."""
    return tomllib.loads((Workspace(ws).run_dir(run_id) / "spec.toml").read_text())


def field(editor: EditorScreen, path: str) -> Input:
    return editor.query_one(f"#{widget_id(path)}", Input)


def record_frames(app) -> list:
    """The screens of the frames the app draws from now on (Textual hands each to `App._display`)."""
    frames = []
    draw = app._display

    def display(screen, renderable):
        if renderable is not None:
            frames.append(screen)
        draw(screen, renderable)
    app._display = display
    return frames



async def open_new_spec(pilot) -> EditorScreen:
    """From the loaded runs screen, `l`: the editor with the default spec, validated."""
    app = pilot.app
    await loaded(pilot, rows=len(RUNS))
    await pilot.press("l")
    editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
    await wait_for(pilot, lambda: "valid" in editor.status_text, what="the default spec")
    return editor

async def test_the_editor_is_built_out_of_sight_and_the_first_edit_copy_shows_the_run(ws):
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        frames = record_frames(app)
        table = await loaded(pilot, rows=len(RUNS))
        editor = await wait_for(pilot, lambda: app.is_screen_installed("editor") and app.get_screen("editor"),
                                what="the editor built in the background")
        await wait_for(pilot, lambda: editor.is_mounted and field(editor, "name").value, what="its form filled")
        await pilot.pause(0.3)
        assert isinstance(app.screen, RunsScreen) and editor not in app.screen_stack
        assert frames and not any(isinstance(screen, EditorScreen) for screen in frames)

        run_id = table.ordered_rows[table.cursor_row].key.value
        expected = run_spec(ws, run_id)
        await pilot.press("e")
        await wait_for(pilot, lambda: app.screen is editor, what="the same editor, shown")
        await wait_for(pilot, lambda: field(editor, "name").value == expected["name"], what="the run's spec")
        assert field(editor, "seed").value == str(expected["seed"])
        assert field(editor, "distill.temperature").value == str(expected["distill"]["temperature"])
        assert "valid" in editor.status_text and editor.source == f"run {run_id}"
        assert expected["name"] in screen_text(app)


async def test_opening_while_the_editor_is_still_being_built_shows_the_asked_spec(ws):
    run_id = RUNS[0][0]
    expected = run_spec(ws, run_id)
    app = make_app(ws)
    registry_read = threading.Event()   # held back: the app builds no editor of its own meanwhile
    poll = app.watcher.poll
    app.watcher.poll = lambda records: registry_read.wait(10) and poll(records)
    async with app.run_test(size=(100, 30)) as pilot:
        app.build_editor()                    # started, not yet composed ...
        app.open_editor(f"run:{run_id}")      # ... when the key comes
        editor = app.get_screen("editor")
        assert app.screen is editor and not editor.is_mounted
        registry_read.set()
        await wait_for(pilot, lambda: field(editor, "name").value == expected["name"] and "valid" in editor.status_text,
                       what="the run's spec")
        assert field(editor, "distill.temperature").value == str(expected["distill"]["temperature"])
        await wait_for(pilot, lambda: app.loaded, what="the registry")
        await pilot.pause(0.3)
        assert app.screen is editor and app.get_screen("editor") is editor  # the load built no second one


async def test_each_label_is_drawn_level_with_its_field(ws):
    app = make_app(ws)
    async with app.run_test(size=(100, 80)) as pilot:   # tall enough to show the whole form
        editor = await open_new_spec(pilot)
        await pilot.pause(0.2)
        lines = screen_text(app).splitlines()
        labels = editor.query_one(FormLabels)
        column = slice(labels.region.x, labels.region.right)
        above = None   # what the row above a field shows: the previous field, or a heading
        section = None
        for path in FIELDS:
            row = field(editor, path).region.y
            assert lines[row][column].strip() == path, (path, lines[row])
            head = path.split(".")[0] if "." in path else "run"
            if head != section:
                section = head
                above = head if head == "run" else f"[{head}]"
            assert lines[row - 1][column].strip() == above, (path, lines[row - 1])
            above = path


async def test_loading_is_not_editing_and_typing_is(ws):
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await loaded(pilot, rows=len(RUNS))
        run_id = table.ordered_rows[table.cursor_row].key.value
        await pilot.press("e")
        editor = await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen, what="editor")
        select = editor.query_one("#editor-source", Select)
        await wait_for(pilot, lambda: select.value == f"run:{run_id}", what="the run picked in the start-from list")
        assert not editor.edited
        await pilot.press("escape")  # filled, not edited: leaves at once
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="left without asking")

        await pilot.press("l")
        await wait_for(pilot, lambda: app.screen is editor and field(editor, "name").value == "digits-selfdistill",
                       what="the default spec")
        await wait_for(pilot, lambda: select.value == "preset:digits", what="the default picked in the list")
        name = field(editor, "name")
        name.focus()
        await pilot.press("end", "x")
        await wait_for(pilot, lambda: editor.data.get("name") == "digits-selfdistillx", what="the typed name")
        assert editor.edited
        await pilot.press("escape")  # edited: asks first
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="discarded")

        await pilot.press("l")  # a fresh load: the typed name is gone and nothing is edited
        await wait_for(pilot, lambda: app.screen is editor and name.value == "digits-selfdistill", what="reloaded")
        assert not editor.edited
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="left without asking again")


async def test_a_bad_field_stays_marked_after_the_cursor_leaves_it(ws):
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        editor = await open_new_spec(pilot)
        epochs = field(editor, "teacher.epochs")
        epochs.focus()
        epochs.value = ""
        await pilot.press("0")
        await wait_for(pilot, lambda: "teacher.epochs = 0" in editor.status_text, what="the error")
        assert epochs.has_class("-invalid")
        await pilot.press("tab")
        await wait_for(pilot, lambda: app.focused is not epochs, what="the cursor on the next field")
        await pilot.pause(0.2)
        assert epochs.has_class("-invalid") and "teacher.epochs = 0" in editor.status_text


async def test_placeholders_show_the_data_sets_defaults(ws):
    def resolved(dataset: str):
        return spec_from_dict({"data": {"dataset": dataset}}).resolved()

    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        editor = await open_new_spec(pilot)
        batch, lr, student = (field(editor, p) for p in ("teacher.batch_size", "teacher.lr", "student.model"))
        digits = resolved("digits")
        assert (batch.value, lr.value) == ("", "")   # left out of digits.toml
        assert (batch.placeholder, lr.placeholder) == (str(digits.teacher.batch_size), str(digits.teacher.lr))
        dataset = field(editor, "data.dataset")
        dataset.focus()
        dataset.value = ""
        await pilot.press(*"cifar100")
        cifar = resolved("cifar100")
        assert cifar.teacher.batch_size != digits.teacher.batch_size  # else this checks nothing
        await wait_for(pilot, lambda: batch.placeholder == str(cifar.teacher.batch_size), what="cifar100's defaults")
        assert lr.placeholder == str(cifar.teacher.lr)
        assert student.placeholder == f"{cifar.teacher.model} (the teacher's)"
