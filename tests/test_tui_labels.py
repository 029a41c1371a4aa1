"""Sweep points named by their short label (`digits-temp · τ=8.0 seed=1`) on the runs, queue, live
and log screens at 80 columns: a 3 τ × 2 seed sweep whose records are written directly (one running
in a slot, four waiting in the line, one done), so no training runs."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from kdtui.analysis.labels import point_label
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import RunQueue
from tests.test_tui import loaded, make_app, rows_by_id, screen_text, wait_for

pytest.importorskip("textual")

from kdtui.tui.screens.live import LiveScreen  # noqa: E402
from kdtui.tui.screens.log import LogScreen  # noqa: E402
from kdtui.tui.screens.queue import QueueScreen  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402

TEMPS, SEEDS = (1.0, 4.0, 8.0), (0, 1)


def sweep_ws(root: Path) -> dict[str, str]:
    """run id -> the label the app should show, for the six points of the sweep."""
    workspace = Workspace(root)
    store = RunStore(workspace)
    expected, records = {}, []
    for i, (temp, seed) in enumerate((t, s) for t in TEMPS for s in SEEDS):
        run_id = f"261203-0000{i:02d}-a{i:03d}"
        status = "running" if i == 0 else "done" if i == 1 else "queued"
        record = {"id": run_id, "name": f"digits-temp[distill.temperature={temp!r},seed={seed}]", "status": status,
                  "created": time.time() - 100 + i, "spec": {"seed": seed, "distill": {"temperature": temp},
                                                             "student": {"epochs": 3}}}
        if status == "running":
            record.update(pid=os.getpid(), host=socket.gethostname(), slot="cpu.0", started=time.time())
        workspace.create_run_dir(run_id)
        records.append(record)
        expected[run_id] = f"digits-temp · τ={temp!r} seed={seed}"
    store.add_many(records)
    queue = RunQueue(workspace)
    with queue.locked():
        queue.write_line([RunQueue.entry(r["id"], ["cpu"]) for r in records if r["status"] == "queued"])
    return expected


def test_point_label_keeps_the_values_and_cuts_the_base():
    name = "digits-temp[distill.temperature=8.0,seed=1]"
    assert point_label(name) == "digits-temp · τ=8.0 seed=1"
    assert point_label(name, 20) == "dig…emp τ=8.0 seed=1"
    assert point_label("x[teacher.members=[1,2],seed=0]") == "x · m=[1,2] seed=0"
    assert point_label("plain-name") == "plain-name" and point_label("plain-name", 5) == "pl…me"


async def test_sweep_points_are_named_by_their_labels_at_80_columns(tmp_path):
    expected = sweep_ws(tmp_path / "ws")
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await loaded(pilot, rows=6)
        rows = rows_by_id(table)
        assert {run_id: cells["name"] for run_id, cells in rows.items()} == expected
        text = screen_text(app)
        assert all(label in text for label in expected.values())
        assert all(len(line) <= 80 for line in text.splitlines())

        await pilot.press("w")
        queue = await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen, what="queue")
        await wait_for(pilot, lambda: queue.state is not None and len(queue.state["waiting"]) == 4, what="the line")
        text = screen_text(app)
        running, done, *waiting = expected
        assert expected[running] in text and expected[done] not in text
        assert all(expected[run_id] in text for run_id in waiting)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")

        table.move_cursor(row=table.get_row_index(running))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen), what="live")
        await wait_for(pilot, lambda: expected[running] in screen_text(app), what="the label in the live header")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back")

        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen), what="the log")
        await wait_for(pilot, lambda: f"event log of {expected[running]} a000" in screen_text(app), what="the log title")


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_live_header_shows_label_phase_epoch_elapsed_and_eta(tmp_path, size):
    from tests.test_tui import _append

    expected = sweep_ws(tmp_path / "ws")
    running = next(iter(expected))
    events = Workspace(tmp_path / "ws").events_path(running)
    t0 = time.time() - 30  # a first epoch of 10 s, 20 s ago: elapsed and a rate for the ETA
    _append(events, [{"type": "phase_start", "phase": "student", "index": 0, "total": 1, "epochs": 3,
                      "steps_per_epoch": 10, "reused": False, "t": t0}])
    _append(events, [{"type": "progress", "phase": "student", "index": 0, "epoch": 1, "step": s, "steps": 10,
                      "t": t0 + s} for s in range(1, 11)])
    _append(events, [{"type": "epoch", "phase": "student", "index": 0, "epoch": 1, "t": t0 + 10,
                      "metrics": {"train_agreement": 0.6, "test_agreement": 0.5, "test_acc": 0.9, "test_kl": 0.1}}])
    app = make_app(tmp_path / "ws")
    async with app.run_test(size=size) as pilot:
        table = await loaded(pilot, rows=6)
        table.move_cursor(row=table.get_row_index(running))
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        await wait_for(pilot, lambda: "1/3" in screen_text(app), what="the phase in the header")
        # the pace comes from two batches of progress (one batch keeps only its last step)
        _append(events, [{"type": "progress", "phase": "student", "index": 0, "epoch": 2, "step": 5, "steps": 10}])
        await wait_for(pilot, lambda: "ETA " in screen_text(app), what="the ETA in the header")
        lines = screen_text(app).splitlines()
        assert all(len(line) <= size[0] for line in lines)
        info = screen.query_one("#live-info")
        head = [line for line in lines if expected[running] in line]
        assert head, lines[:6]
        shown = "\n".join(lines[lines.index(head[0]):lines.index(head[0]) + 2])
        epoch = "student epoch 2/3" if size[0] >= 100 else "student ep 2/3"
        for part in ("running", epoch, "50%", "ETA "):
            assert part in shown, (part, shown)
        assert info.region.height in (1, 2)


async def test_a_stopped_run_shows_its_last_finished_epochs_metrics_marked_as_such(tmp_path):
    ws = tmp_path / "ws"
    RunStore(Workspace(ws)).add({"id": "261203-000200-50f0", "name": "halted", "status": "stopped",
                                 "created": time.time(), "spec": {"student": {"epochs": 5}},
                                 "last_epoch_metrics": {"epoch": 2, "train_agreement": 0.61,
                                                        "test_agreement": 0.5432, "test_acc": 0.875}})
    app = make_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await loaded(pilot, rows=1)
        row = rows_by_id(table)["261203-000200-50f0"]
        assert row["status"] == "stopped" and row["progress"] == "S 2 last"
        assert row["test"] == "0.543" and row["acc"] == "0.875"


def test_reference_lines_are_named_at_their_right_end_beside_the_legend():
    import re

    from textual_plotext.plot import Plot

    from kdtui.tui.widgets.curves import draw

    ansi = re.compile(r"\x1b\[[0-9;]*m")
    out = ansi.sub("", draw(Plot(), "acc", [("test acc", [0, 1, 2], [0.5, 0.6, 0.7])], None, 40, 10, "clear",
                            references=[("teacher acc", 0.95)]))
    row = next(line for line in out.splitlines() if "teacher acc" in line)
    assert row.startswith("0.950") and row.rstrip().endswith("teacher acc┤")
    out = ansi.sub("", draw(Plot(), "agreement", [("train agr", [0, 1, 2], [0.5, 0.6, 0.7])], (0, 1.02), 40, 10,
                            "clear", references=[("1.0", 1.0)]))
    row = next(line for line in out.splitlines() if "train agr" in line)  # the legend, on the 1.0 line's row
    assert row.rstrip().endswith("1.0┤")
