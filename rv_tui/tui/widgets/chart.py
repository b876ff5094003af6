"""Free GPUs per type over the session, drawn with plotext into a Static.

We render plotext ourselves (as dolphie does) instead of using textual-plotext, which pins
plotext < 6.  plotext paints its own background and black/white axes; we strip those codes so
the chart sits on the Textual theme's background and its axes take the theme's text colour,
which keeps it readable in light and dark themes.  Line colours are plotext's bright palette.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from rich.text import Text
from textual.widgets import Static

#: Background codes, and foreground black/white (axes, labels) that would vanish on one theme.
_STRIP = re.compile(r"\x1b\[48;5;\d+m|\x1b\[38;5;(?:0|7|8|15|16|231|232)m")


def render_history(history: Mapping[str, Sequence[tuple[datetime, int]]], width: int,
                   height: int, title: str = "free GPUs per type") -> str:
    """An ANSI string of the chart, or a plain message when there is nothing to plot."""
    import plotext as plt

    series = {k: list(v) for k, v in sorted(history.items()) if v}
    if not series or width < 20 or height < 6:
        return "waiting for the first poll…" if not series else ""
    t0 = min(points[0][0] for points in series.values())
    fig = plt.figure
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("default")
    ymax = 1
    for gtype, points in series.items():
        xs = [(t - t0).total_seconds() / 60.0 for t, _ in points]
        ys = [free for _, free in points]
        ymax = max(ymax, *ys)
        if len(xs) == 1:  # a single point: draw a short flat segment so it is visible
            xs, ys = [xs[0], xs[0] + 0.01], [ys[0], ys[0]]
        fig.draw(fig.signal(xs, ys).lines().label(gtype))
    fig.title(title)
    fig.label("minutes", axis="x")
    try:
        out = fig.build().string()
    except Exception as exc:  # plotext can fail on degenerate sizes; never crash the pane
        return f"(chart unavailable: {exc})"
    return _STRIP.sub("", out)


class HistoryChart(Static):
    """A Static that re-renders the history chart on data change and on resize."""

    DEFAULT_CSS = """
    HistoryChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("", *args, **kwargs)
        self._history: Mapping[str, Sequence[tuple[datetime, int]]] = {}

    def set_history(self, history: Mapping[str, Sequence[tuple[datetime, int]]]) -> None:
        self._history = history
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        w, h = self.content_size.width, self.content_size.height
        if w <= 0 or h <= 0:
            return
        self.update(Text.from_ansi(render_history(self._history, w, h)))
