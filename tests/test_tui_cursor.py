"""The cursor follows its run, not its row, and marks stay until cleared: on the 3 τ × 2 seed sweep
of tests/test_tui_labels.py (records written directly, no training)."""
from __future__ import annotations

import time

import pytest

from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from tests.test_tui import loaded, make_app, rows_by_id, wait_for
from tests.test_tui_labels import sweep_ws

pytest.importorskip("textual")

from textual.widgets import DataTable  # noqa: E402

from kdtui.tui.screens.compare import CompareScreen  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402


def cursor_run(app) -> str | None:
    """The run of the highlighted row, read from the table itself (not the screen's bookkeeping)."""
    table = app.screen.query_one("#runs-table")
    return table.ordered_rows[table.cursor_row].key.value


async def test_cursor_stays_on_its_run_through_a_re_sort_a_status_change_and_a_new_run(tmp_path):
    ids = list(sweep_ws(tmp_path / "ws"))
    done = ids[1]
    store = RunStore(Workspace(tmp_path / "ws"))
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await loaded(pilot, rows=6)
        screen = app.screen
        await pilot.press("o")  # sort by status
        await wait_for(pilot, lambda: screen.sort_key == "status", what="sorted by status")
        table.move_cursor(row=screen.visible_ids.index(done))
        await wait_for(pilot, lambda: cursor_run(app) == done, what="the cursor on the done run")
        before = list(screen.visible_ids)
        # two waiting runs end, one in the line fails, and a new run comes in: the rows re-sort
        store.update_many(ids[2:4], status="done", metrics={"test_agreement": 0.9})
        store.update(ids[4], status="failed", error="x")
        store.add({"id": "261203-000100-beef", "name": "late", "status": "done", "created": time.time(),
                   "spec": {"student": {"epochs": 3}}})
        await wait_for(pilot, lambda: table.row_count == 7, what="the new run")
        await wait_for(pilot, lambda: screen.visible_ids != before and
                       screen.visible_ids.index(done) != before.index(done), what="the rows re-sorted around it")
        assert cursor_run(app) == done and screen.current_id() == done
        # s acts on the highlighted run (done: nothing to stop), not on the row's new occupant
        await pilot.press("s")
        await wait_for(pilot, lambda: any("this run is not running or queued" in str(n.message)
                                          for n in app._notifications), what="the warning about the done run")
        assert not any((tmp_path / "ws" / i / "STOP").exists() for i in ids)


async def test_marks_survive_compare_and_a_filter_hides_them_from_stop(tmp_path):
    ids = list(sweep_ws(tmp_path / "ws"))
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await loaded(pilot, rows=6)
        screen = app.screen
        summary = screen.query_one("#runs-summary")
        newest_first = list(screen.visible_ids)
        await pilot.press("space", "space")
        await wait_for(pilot, lambda: app.marked == newest_first[:2], what="two marked")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")
        assert app.marked == newest_first[:2]
        await wait_for(pilot, lambda: "2 marked" in str(summary.render()), what="the count shown")
        rows = rows_by_id(table)
        assert [i for i in newest_first if rows[i]["status"].startswith("*")] == newest_first[:2]
        # a filter that hides the marked runs: stop and delete would act on the highlighted run only
        oldest = newest_first[-1]
        await pilot.press("slash", *oldest.rsplit("-", 1)[1], "enter")
        await wait_for(pilot, lambda: screen.visible_ids == [oldest], what="the filter")
        assert screen._targets() == ([oldest], "cursor")
        await pilot.press("u")  # enter gave the keys back to the table
        await wait_for(pilot, lambda: app.marked == [] and "marked" not in str(summary.render()), what="u clears")


async def test_filter_takes_key_value_terms_and_enter_gives_the_keys_back(tmp_path):
    expected = sweep_ws(tmp_path / "ws")
    by_label = {label: run_id for run_id, label in expected.items()}
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=6)
        screen = app.screen
        summary = screen.query_one("#runs-summary")
        await pilot.press("slash", *"τ=8 seed=1", "enter")
        await wait_for(pilot, lambda: screen.visible_ids == [by_label["digits-temp · τ=8.0 seed=1"]],
                       what="the one point τ=8, seed 1")
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable), what="the table focused after enter")
        await pilot.press("space")  # a key for the table, not the filter's text
        await wait_for(pilot, lambda: app.marked == [by_label["digits-temp · τ=8.0 seed=1"]], what="marked")
        assert screen.filter_text == "τ=8 seed=1"
        # the long key name, a status and a word, combined
        await pilot.press("slash", "ctrl+u", *"temperature=4 status:queued digits", "enter")
        want = sorted(by_label[f"digits-temp · τ=4.0 seed={s}"] for s in (0, 1))
        await wait_for(pilot, lambda: sorted(screen.visible_ids) == want, what="τ=4 and queued")
        # a term without a value: the bar says so in one line
        await pilot.press("slash", "ctrl+u", *"τ=", "enter")
        await wait_for(pilot, lambda: "needs a key and a value" in str(summary.render()), what="the filter's error")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(screen.visible_ids) == 6 and not screen.filter_error, what="cleared")


async def test_note_tags_and_rename_from_the_app(tmp_path):
    sweep_ws(tmp_path / "ws")
    store = RunStore(Workspace(tmp_path / "ws"))
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await loaded(pilot, rows=6)
        screen = app.screen
        run_id = screen.current_id()
        record = store.get(run_id)
        await pilot.press("n", *"best so far", "enter")
        await wait_for(pilot, lambda: store.get(run_id).get("note") == "best so far", what="the note stored")
        await pilot.press("t", *"+baseline +keep", "enter")
        await wait_for(pilot, lambda: store.get(run_id).get("tags") == ["baseline", "keep"], what="the tags")
        await pilot.press("t", *"-keep", "enter")
        await wait_for(pilot, lambda: store.get(run_id).get("tags") == ["baseline"], what="a tag removed")
        await pilot.press("R", "ctrl+u", *"warm start", "enter")
        await wait_for(pilot, lambda: store.get(run_id).get("name") == "warm start", what="the new name")
        after = store.get(run_id)
        assert (after["id"], after["spec_hash"], after["group_hash"]) == (run_id, record["spec_hash"],
                                                                           record["group_hash"])
        # renamed; its tags and note follow the name where there is room (tests/test_tui_daily.py)
        await wait_for(pilot, lambda: rows_by_id(table)[run_id]["name"].startswith("warm start  #baseline"),
                       what="the row renamed")
        # the filter finds them by tag and by the note's words
        await pilot.press("slash", *"tag:baseline", "enter")
        await wait_for(pilot, lambda: screen.visible_ids == [run_id], what="tag:baseline")
        await pilot.press("slash", "ctrl+u", *"best", "enter")
        await wait_for(pilot, lambda: screen.visible_ids == [run_id], what="the note's word")


async def test_queue_screen_moves_cancels_and_opens_a_waiting_run(tmp_path):
    from kdtui.runs.executors.slots import RunQueue
    from kdtui.tui.screens.live import LiveScreen
    from kdtui.tui.screens.queue import QueueScreen

    ids = list(sweep_ws(tmp_path / "ws"))
    waiting = ids[2:]  # in the line in this order
    line = lambda: [e["run"] for e in RunQueue(Workspace(tmp_path / "ws")).read_line()]  # noqa: E731
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=6)
        await pilot.press("w")
        queue = await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen, what="queue")
        await wait_for(pilot, lambda: queue.waiting_ids == waiting, what="the line read")
        assert queue.picked == waiting[0]
        await pilot.press("down", "J")  # the second run moves down a place
        await wait_for(pilot, lambda: line() == [waiting[0], waiting[2], waiting[1], waiting[3]], what="moved down")
        await wait_for(pilot, lambda: queue.waiting_ids == line(), what="the screen reread")
        assert queue.picked == waiting[1]  # the pick followed its run
        await pilot.press("K", "K")
        await wait_for(pilot, lambda: line()[0] == waiting[1], what="moved to the front")
        await pilot.press("x")  # cancel: stopped, out of the line
        await wait_for(pilot, lambda: RunStore(Workspace(tmp_path / "ws")).get(waiting[1])["status"] == "stopped",
                       what="the picked run stopped")
        await wait_for(pilot, lambda: waiting[1] not in queue.waiting_ids, what="gone from the line")
        picked = queue.picked
        await pilot.press("enter")
        live = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="its live view")
        assert live.run_id == picked
