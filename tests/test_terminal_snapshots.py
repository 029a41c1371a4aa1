"""Text snapshots of the runs and compare screens, as tmux shows them at 100×30, and of the runs
screen at 80×24 (sweep points by their labels, `snap · τ=4.0 seed=1`).

The workspace is made up here, with fixed ids, settings, metrics and histories, so the screens are the
same on every run; the snapshots are the files in tests/snapshots/. After a deliberate change to a
screen, rewrite them with `KDTUI_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_terminal_snapshots.py`
and review the diff.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from kdtui.core.eventlog import EventWriter
from kdtui.core.registry import RunStore
from kdtui.core.lifecycle import new_record
from kdtui.core.spec import spec_from_dict
from kdtui.core.workspace import Workspace
from tests.cli_helpers import KDTUI, wait_for
from tests.tmux import Tmux, app_env

SNAPSHOTS = Path(__file__).parent / "snapshots"
T0 = 1_790_000_000.0  # event times: fixed, so nothing on screen depends on today

RUNS = [  # id, temperature, seed, final test agreement
    ("251101-090000-a1a1", 1.0, 0, 0.9306),
    ("251101-090000-b2b2", 4.0, 0, 0.9676),
    ("251101-090000-c3c3", 4.0, 1, 0.9722),
]


def _make_workspace(root: Path) -> None:
    ws = Workspace(root)
    store = RunStore(ws)
    created = time.time() - 3 * 86400 - 600  # shown as "3d" for the whole test
    for run_id, temperature, seed, final in RUNS:
        spec = spec_from_dict({"name": f"snap[distill.temperature={temperature!r},seed={seed}]", "seed": seed, "device": "cpu",
                               "data": {"dataset": "digits"}, "student": {"epochs": 4},
                               "distill": {"temperature": temperature}}).resolved()
        history = [{"epoch": e, "train_agreement": round(final * (0.6 + 0.1 * e) - 0.02, 4),
                    "test_agreement": round(final * (0.6 + 0.1 * e), 4), "test_acc": round(final * (0.59 + 0.1 * e), 4),
                    "test_kl": round(0.5 / (e + 1), 4)} for e in range(5)]
        ws.create_run_dir(run_id)
        (ws.run_dir(run_id) / "spec.toml").write_text(spec.to_toml())
        with EventWriter(ws.events_path(run_id)) as events:
            for row in history:
                events.write({"t": T0 + row["epoch"], "type": "epoch", "phase": "student", "index": 0,
                              "epoch": row["epoch"], "metrics": {k: v for k, v in row.items() if k != "epoch"}})
            events.write({"t": T0 + 5, "type": "done", "metrics": history[-1]})
        store.add({**new_record(run_id, spec), "status": "done", "created": created, "started": T0,
                   "finished": T0 + 5, "metrics": {**history[-1], "teacher_test_acc": 0.9944}, "device": "cpu"})


def _normalised(screen: str) -> str:
    """The screen without its first line (the title holds the workspace's path) and trailing blanks."""
    lines = [line.rstrip() for line in screen.splitlines()[1:]]
    return "\n".join(lines).rstrip() + "\n"


def _check(name: str, screen: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("KDTUI_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(_normalised(screen))
    assert _normalised(screen) == path.read_text(), f"{name} differs from {path}:\n{screen}"


def _settled(term: Tmux) -> str | None:
    """The screen, once two captures half a second apart agree (nothing is still being drawn)."""
    first = term.screen()
    time.sleep(0.5)
    return first if term.screen() == first else None


def test_runs_and_compare_screens_match_their_snapshots(tmp_path):
    ws = tmp_path / "ws"
    _make_workspace(ws)
    term = Tmux(tmp_path, [*KDTUI, "--workspace", str(ws), "--no-mouse"], app_env(ws), size=(100, 30))
    try:
        term.wait_screen(*(run_id.rsplit("-", 1)[1] for run_id, *_ in RUNS), "3 runs")  # ids by their suffix
        screen = wait_for(lambda: _settled(term), timeout=20, what="the runs screen to settle")
        assert "kdtui" in screen.splitlines()[0]
        _check("runs_screen", screen)

        term.keys("Space", "Space", "c")  # mark the first two rows (marking moves down), compare them
        term.wait_screen("2 runs", RUNS[2][0].rsplit("-", 1)[1], RUNS[1][0].rsplit("-", 1)[1])
        _check("compare_screen", wait_for(lambda: _settled(term), timeout=20, what="the compare screen to settle"))
    finally:
        term.close()
    narrow = tmp_path / "narrow"  # a tmux server of its own (the first one's socket may still be closing)
    narrow.mkdir()
    term = Tmux(narrow, [*KDTUI, "--workspace", str(ws), "--no-mouse"], app_env(ws), size=(80, 24))
    try:
        term.wait_screen("snap · τ=1.0 seed=0", "snap · τ=4.0 seed=0", "snap · τ=4.0 seed=1", "3 runs")
        _check("runs_screen_80x24", wait_for(lambda: _settled(term), timeout=20, what="the 80x24 screen to settle"))
    finally:
        term.close()
