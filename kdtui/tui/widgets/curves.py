"""A plot of a few metric curves against the epoch (a textual-plotext PlotextPlot).

Building a plotext figure and parsing its ANSI output takes tens of milliseconds per plot, so the
figure is built in a worker thread whenever the data or the size changes; `render` only hands over
the last figure built (the UI never waits for plotext while runs stream in).
"""
from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from kdtui.tui.text import literal

# Distinct markers as well as colours, so curves stay apart in NO_COLOR and on 256-colour terminals.
MARKERS = ("braille", "dot", "+", "x", "*", "o", "#", "@")
COLORS = ("cyan", "magenta", "green", "orange", "blue", "red", "yellow", "white")

Series = tuple[str, Sequence[float], Sequence[float]]


def x_limits(series: list[Series]) -> tuple[float, float]:
    """The x axis: the epochs plotted, never below 0, and at least one epoch wide (plotext's own
    choice for a single point is -1 to 1)."""
    xs = [x for _, points, _ in series for x in points]
    if not xs:
        return 0.0, 1.0
    low, high = min(xs), max(xs)
    if high - low < 1:
        low = max(low - 0.5, 0.0)
        high = low + 1.0
    return float(low), float(high)


def draw(plot: Plot, title: str, series: list[Series], y_range: tuple[float, float] | None,
         width: int, height: int, theme: str, references: list[tuple[str, float]] = (),
         legend: bool = True) -> str:
    """The figure as ANSI text (pure: runs in a worker thread on a Plot of its own).

    `references` are horizontal lines (a teacher's accuracy, agreement 1.0), grey, each named at its
    right end (`teacher acc`, `1.0`);
    `legend=False` leaves the labels to a legend table beside the plot (many curves)."""
    plot.title(title)
    plotted = [(label, xs, ys) for label, xs, ys in series if xs]
    for i, (label, xs, ys) in enumerate(series):
        if xs:
            # The label with its control characters escaped: the figure is read back from ANSI.
            plot.plot(list(xs), list(ys), label=literal(label) if legend else None, marker=MARKERS[i % len(MARKERS)],
                      color=COLORS[i % len(COLORS)])
    right = x_limits(plotted)[1]
    for name, y in references:
        plot.hline(y, "gray")
        # Named at the right end: the legend sits at the top left, over a line drawn there.
        plot.text(literal(name), right, y, color="gray", alignment="right")
    if y_range is not None:
        plot.ylim(*y_range)
    elif not plotted:
        plot.ylim(0, 1)
    elif all(len(set(ys)) <= 1 for _, _, ys in plotted) and len({ys[0] for _, _, ys in plotted}) == 1:
        value = plotted[0][2][0]  # one flat value: give it a band, not an axis of one number
        plot.ylim(value - 0.5 if value else -0.5, value + 0.5 if value else 0.5)
    plot.xlim(*x_limits(plotted))
    plot.xlabel("epoch")
    plot.plotsize(width, height)
    plot._set_size(width, height)  # as PlotextPlot.render does: plotsize alone does not stick
    plot.theme(theme)
    return plot.build()


class Curves(PlotextPlot):
    """`set_series([(label, xs, ys), ...])`; the figure is rebuilt off the UI thread."""

    DEFAULT_CSS = """
    Curves { height: 1fr; width: 1fr; min-height: 5; }
    """

    def __init__(self, title: str, *, y_range: tuple[float, float] | None = None, id: str | None = None,
                 classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.title = title
        self.y_range = y_range
        self.series: list[Series] = []
        self.references: list[tuple[str, float]] = []
        self.legend = True
        self._key: tuple = ()
        self._figure: tuple[tuple, Text] | None = None   # (what it shows, the figure)
        self._building: tuple | None = None

    def set_series(self, series: list[Series], references: list[tuple[str, float]] = (),
                   legend: bool = True) -> bool:
        """Replace the curves (and the reference lines); returns whether anything changed (and a
        rebuild was started)."""
        key = (tuple((label, len(xs), tuple(ys[-1:])) for label, xs, ys in series), tuple(references), legend)
        if key == self._key:
            return False
        self._key = key
        self.references = list(references)
        self.legend = legend
        self.series = [(label, list(xs), list(ys)) for label, xs, ys in series]
        self._request()
        return True

    def point_count(self) -> int:
        return sum(len(xs) for _, xs, _ in self.series)

    @property
    def drawn(self) -> bool:
        """The figure on screen shows the current curves at the current size."""
        return self._figure is not None and self._figure[0] == self._wanted()

    def _wanted(self) -> tuple:
        return (self.size.width, self.size.height, self._key, self.app.theme)

    def on_resize(self) -> None:
        self._request()

    def _request(self) -> None:
        if not self.is_mounted:
            return
        wanted = self._wanted()
        width, height = wanted[0], wanted[1]
        if width <= 0 or height <= 0 or wanted == self._building or self.drawn:
            return
        self._building = wanted
        args = (self.title, list(self.series), self.y_range, width, height,
                self._get_plotext_theme_name(self.app.theme), list(self.references), self.legend)

        def build() -> None:
            figure = Text.from_ansi(draw(Plot(), *args))
            self.app.call_from_thread(self._built, wanted, figure)
        self.run_worker(build, thread=True, group="curves", exit_on_error=False)

    def _built(self, wanted: tuple, figure: Text) -> None:
        if self._building == wanted:
            self._building = None
        current = self._figure[0] if self._figure else None
        # Keep the newest: a late build of older data must not replace a newer figure.
        if current is None or wanted == self._wanted() or current != self._wanted():
            self._figure = (wanted, figure)
            self.refresh()
        if not self.drawn:
            self._request()

    def on_mount(self) -> None:
        super().on_mount()
        self.call_after_refresh(self._request)

    def render(self):
        if not self.drawn:
            self.call_later(self._request)
        if self._figure is None:
            return Text(self.title, justify="center")
        return self._figure[1]
