"""The GPU line under the header, driven through Textual's Pilot with a stand-in `pynvml` module.

The stand-in reports two GPUs with known numbers; the line is checked on every screen where runs are
watched (runs, live, log, queue, compare), and its absence (no row kept for it) when NVML is not
installed, has no driver, or finds no GPU. The workspace is made up (tests/test_terminal_snapshots.py's
three finished runs), so no run is trained here.
"""
from __future__ import annotations

import re
import sys
import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("textual")

from textual.widgets import Header  # noqa: E402

from kdtui.tui.screens.compare import CompareScreen  # noqa: E402
from kdtui.tui.screens.live import LiveScreen  # noqa: E402
from kdtui.tui.screens.log import LogScreen  # noqa: E402
from kdtui.tui.screens.queue import QueueScreen  # noqa: E402
from kdtui.tui.screens.runs import RunsScreen  # noqa: E402
from kdtui.tui.widgets import gpus as gpus_module  # noqa: E402
from kdtui.tui.widgets.curves import Curves  # noqa: E402
from kdtui.tui.widgets.gpus import GpuStatus  # noqa: E402
from tests.cli_helpers import wait_for as poll_until  # noqa: E402
from tests.test_terminal_snapshots import RUNS, _make_workspace  # noqa: E402
from tests.test_tui import loaded, make_app, screen_text, wait_for  # noqa: E402

GIB = 2**30
# What the stand-in's numbers read as, worked out by hand: 12.5 GiB of 80 GiB, 1.5 GiB of 80 GiB.
TWO_GPUS = "GPU0 87% 12.5/80.0G · GPU1 3% 1.5/80.0G"
GPU_READING = re.compile(r"GPU\d+ \d+%")


class NVMLError(Exception):
    pass


class FakeNvml:
    """The part of pynvml the sampler calls, with counters for how often NVML is opened and from where."""

    NVMLError = NVMLError

    def __init__(self, devices: list[dict], init_error: bool = False):
        self.devices = devices
        self.init_error = init_error
        self.inits = self.shutdowns = 0
        self.reader_threads: set[int] = set()

    def nvmlInit(self):
        self.inits += 1
        if self.init_error:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.reader_threads.add(threading.get_ident())
        return SimpleNamespace(gpu=handle["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=handle["used"], total=handle["total"], free=handle["total"] - handle["used"])


def two_gpus() -> FakeNvml:
    return FakeNvml([{"util": 87, "used": int(12.5 * GIB), "total": 80 * GIB},
                     {"util": 3, "used": int(1.5 * GIB), "total": 80 * GIB}])


@pytest.fixture
def made_up_ws(tmp_path):
    ws = tmp_path / "ws"
    _make_workspace(ws)
    return ws


def second_line(app) -> str:
    return screen_text(app).splitlines()[1].strip()


async def visit_watching_screens(pilot, check) -> list[str]:
    """Runs, live (of the newest run), its log, the queue, then the compare screen of two runs;
    `check(screen)` on each once it is up. Returns the screens' names in order."""
    app = pilot.app
    await loaded(pilot, rows=len(RUNS))
    visited = []

    async def on(kind, *keys):
        if keys:
            await pilot.press(*keys)
        screen = await wait_for(pilot, lambda: isinstance(app.screen, kind) and app.screen, what=kind.__name__)
        await check(screen)
        visited.append(kind.__name__)

    await on(RunsScreen)
    await on(LiveScreen, "enter")
    await on(LogScreen, "v")
    await pilot.press("escape", "escape")
    await on(RunsScreen)
    await on(QueueScreen, "w")
    await pilot.press("escape")
    await on(CompareScreen, "space", "space", "c")
    return visited


async def test_every_watching_screen_shows_each_gpu_from_one_sampler(made_up_ws, monkeypatch):
    nvml = two_gpus()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(gpus_module, "GPU_REFRESH_S", 0.05)  # new numbers show within the test
    app = make_app(made_up_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        async def shows_two_gpus(screen):
            await wait_for(pilot, lambda: second_line(app) == TWO_GPUS, what=f"the GPU line on {screen}")
            assert screen.query_one(GpuStatus).region.y == 1  # right under the header

        visited = await visit_watching_screens(pilot, shows_two_gpus)
        assert visited == ["RunsScreen", "LiveScreen", "LogScreen", "RunsScreen", "QueueScreen", "CompareScreen"]
        # NVML opened once and read from one thread, however many screens showed it
        assert nvml.inits == 1 and len(nvml.reader_threads) == 1
        assert len([w for w in app.workers if w.group == "gpus"]) == 1

        nvml.devices[0]["util"] = 50
        nvml.devices[1]["used"] = 40 * GIB
        moved_on = "GPU0 50% 12.5/80.0G · GPU1 3% 40.0/80.0G"
        await wait_for(pilot, lambda: second_line(app) == moved_on, what="the new reading on the compare screen")
        await pilot.press("escape")  # the runs screen, under compare all along, has it too
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back to the runs screen")
        await pilot.pause()
        assert second_line(app) == moved_on
    poll_until(lambda: nvml.shutdowns == 1, timeout=10, what="NVML shut down when the app ends")
    assert nvml.inits == 1


@pytest.mark.parametrize("make_nvml", [lambda: None, lambda: FakeNvml([], init_error=True), lambda: FakeNvml([])],
                         ids=["not-installed", "no-driver", "no-gpu"])
async def test_no_gpu_line_and_no_row_kept_without_nvml(made_up_ws, monkeypatch, make_nvml):
    nvml = make_nvml()  # a fresh one each time: it counts its inits (and `--count` repeats a test)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)  # None: `import pynvml` raises ImportError
    app = make_app(made_up_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.gpus.available is False, what="the sampler to find no GPU")

        async def no_gpu_row(screen):
            widget = screen.query_one(GpuStatus)
            first = next(w for w in screen.children if w.display and not isinstance(w, (Header, GpuStatus)))
            await wait_for(pilot, lambda: first.region.height > 0, what=f"{screen}'s layout")
            assert widget.display is False and widget.region.height == 0
            assert first.region.y == 1  # the screen's first widget right under the header
            assert not GPU_READING.search(screen_text(app))

        await visit_watching_screens(pilot, no_gpu_row)
        assert app.gpu_line == ""
    if nvml is not None:
        assert nvml.inits == 1
        assert nvml.shutdowns == (0 if nvml.init_error else 1)  # opened, found no GPU, closed at once


async def test_live_screen_at_80x24_keeps_its_charts_with_the_gpu_line(made_up_ws, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", two_gpus())
    app = make_app(made_up_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        await wait_for(pilot, lambda: second_line(app) == TWO_GPUS, what="the GPU line")
        await wait_for(pilot, lambda: all(c.drawn for c in screen.query(Curves) if c.display), what="the plots")
        agreement, acc, kl = (screen.query_one(f"#{name}", Curves) for name in ("plot-agreement", "plot-acc", "plot-kl"))
        # the same bar as without the GPU line: agreement and one small chart readable, the other behind t
        assert agreement.region.height >= 10 and acc.region.height >= 10 and kl.region.height == 0
        assert screen.query_one("#live-epochs").region.height >= 4 and screen.query_one("#live-log").region.height >= 4
        text = await wait_for(pilot, lambda: (lambda t: t if "test acc" in t and "test agr 0." in t else None)(screen_text(app)),
                              what="the charts and the latest metrics on screen")
        lines = text.splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        assert lines[1].strip() == TWO_GPUS and "done" in lines[2]  # GPUs, then the run's head line


@pytest.mark.parametrize("height, compact", [(29, True), (30, False)])
async def test_the_gpu_row_counts_when_the_live_screen_picks_its_charts(made_up_ws, monkeypatch, height, compact):
    """Both small charts need 29 rows without the GPU line, so 30 with it; one row fewer and they take turns."""
    monkeypatch.setitem(sys.modules, "pynvml", two_gpus())
    app = make_app(made_up_ws)
    async with app.run_test(size=(100, height)) as pilot:
        await loaded(pilot, rows=len(RUNS))
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen, what="live")
        await wait_for(pilot, lambda: second_line(app) == TWO_GPUS, what="the GPU line")
        await wait_for(pilot, lambda: screen.has_class("compact") == compact, what=f"compact={compact}")
        await wait_for(pilot, lambda: all(c.drawn for c in screen.query(Curves) if c.display), what="the plots")
        plots = screen.query_one("#live-plots").region
        shown = [c for c in screen.query(Curves) if c.region.height]
        assert [c.id for c in shown] == (["plot-agreement", "plot-acc"] if compact else
                                         ["plot-agreement", "plot-acc", "plot-kl"])
        for chart in shown:  # whole, inside the plots' area, and no shorter than its minimum
            assert plots.contains_region(chart.region) and chart.region.height >= 8, chart.id
        if not compact:
            acc, kl = shown[1:]
            assert acc.region.bottom <= kl.region.y  # stacked, not drawn over each other
