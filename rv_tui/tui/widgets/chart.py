"""The dashboard's charts, drawn by plotext (the design card's chart library) into Rich Text.

plotext 6 renders at any size once its terminal limit is off, so every chart is built at the
widget's real size (``plotext.figure.plot_size``), turned into ANSI text (``build().string()``)
and shown with ``Text.from_ansi``.  Two habits keep the charts readable and stable:

* each GPU type has one fixed, distinct colour (mid-tone, readable on light and dark themes);
  axes use no colour of their own (the ``simple`` theme: the theme's text colour);
* plotext's own legend is switched off: ours is a row *above* the plot, so it never hides data.

The charts only draw what they are given (history points, race lanes): the data comes from
:class:`rv_tui.tui.state.AppState` and the race engine's events.  Same input, same text, so SVG
snapshots of them are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from rv_tui.tui.colours import TYPE_COLOURS, colour_of, rgb  # noqa: F401 - re-exported



def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return rgb(hex_colour)


def plot(draw: Callable[[Any, Any], None], width: int, height: int) -> Text:
    """Build one plotext figure of ``width`` x ``height`` cells; ``draw(plotext, figure)`` adds
    the signals.  plotext keeps one global figure: it is cleared before every chart."""
    import plotext

    plotext.terminal.limit(False, False)  # else plotext clamps to the detected terminal (80x24)
    fig = plotext.figure
    fig.clear()
    fig.theme("simple")
    fig.plot_size(width, height)
    draw(plotext, fig)
    fig.legend(active=False)
    text = Text.from_ansi(fig.build().string().rstrip("\n"), no_wrap=True)
    fig.clear()
    return text


def _fit(text: Text, width: int) -> Text:
    """Every line of ``text`` cut to ``width`` cells (a legend is longer than a narrow pane)."""
    lines = text.split("\n")
    for line in lines:
        line.truncate(width, overflow="crop")
    return Text("\n").join(lines)


def legend(types: Sequence[str], title: str = "free GPUs per type") -> Text:
    out = Text.assemble((title, "bold"), "  ")
    for t in types:
        out.append("■ ", style=Style(color=colour_of(t, types)))
        out.append(f"{t}  ")
    return out


def _fmt_minutes(m: float) -> str:
    return f"{m:.0f}m" if m < 120 else f"{m / 60:.1f}h"


def render_history(history: Mapping[str, Sequence[tuple[datetime, int]]], width: int,
                   height: int, title: str = "free GPUs per type") -> Text:
    """Legend row + a step chart of free GPUs per type over time, ``width`` x ``height`` cells."""
    series = {k: list(v) for k, v in sorted(history.items()) if v}
    if not series:
        return Text("waiting for the first poll…", style="dim")
    types = list(series)
    head = legend(types, title)
    if width < 20 or height < 6:
        return _fit(head, width)
    t1 = max(p[-1][0] for p in series.values())
    t0 = min(p[0][0] for p in series.values())
    span = max((t1 - t0).total_seconds() / 60.0, 1.0)
    ymax = max(1, *(free for pts in series.values() for _, free in pts))

    def draw(plt: Any, fig: Any) -> None:
        for t, pts in series.items():
            xs: list[float] = []
            ys: list[float] = []
            for i, (when, free) in enumerate(pts):
                x = -(t1 - when).total_seconds() / 60.0
                if i:  # a step: along at the old value, then up or down
                    xs.append(x)
                    ys.append(ys[-1])
                xs.append(x)
                ys.append(free)
            if xs[-1] < 0:  # the last known value holds until now
                xs.append(0.0)
                ys.append(ys[-1])
            if len(xs) == 1:
                xs, ys = [-span, 0.0], [ys[0], ys[0]]
            sig = fig.signal(xs, ys, marker=plt.marker("braille", _rgb(colour_of(t, types))))
            sig.lines()
            fig.draw(sig)
        fig.ruler(0).lim(-span, 0)
        fig.ruler(0).ticks([-span, -span / 2, 0],
                           [f"-{_fmt_minutes(span)}", f"-{_fmt_minutes(span / 2)}", "now"])
        fig.ruler(1).lim(0, ymax)
        ticks = sorted({0, ymax // 2, ymax}) if ymax >= 4 else list(range(ymax + 1))
        fig.ruler(1).ticks(ticks, [str(v) for v in ticks])

    chart = plot(draw, width, height - 1)
    return _fit(Text("\n").join([head, chart]), width)


@dataclass(frozen=True)
class TimelineLane:
    """One strategy of a race, as offsets (seconds since the launch) of what happened to it."""

    label: str
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    end: str = ""  # "cancelled", "failed", "refused", "won", or a final job state
    winner: bool = False


#: Timeline colours (RGB): queued, running, the winner's run, an end that is not a success.
_QUEUED = (148, 163, 184)
_RUNNING = (6, 182, 212)
_WON = (22, 163, 74)
_BAD = (220, 38, 38)


def timeline_legend() -> Text:
    return Text.assemble(("race timeline  ", "bold"),
                         ("── ", Style(color="#94a3b8")), "queued  ",
                         ("━━ ", Style(color="#06b6d4")), "running  ",
                         ("★ ", Style(color="#16a34a")), "winner  ",
                         ("✗ ", Style(color="#94a3b8")), "cancelled  ",
                         ("✗ ", Style(color="#dc2626")), "failed/refused  ",
                         ("■ ", Style(color="#16a34a")), "ended")


def _offset_label(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"+{s:.0f}s"
    if s < 3600:
        return f"+{s / 60:.0f}m"
    return f"+{s / 3600:.1f}h"


def render_timeline(lanes: Sequence[TimelineLane], now: float, width: int, height: int) -> Text:
    """One lane per strategy over time since the launch: queued (thin), running (thick),
    winner ★, cancelled/failed ✗, the job's end ■; ``now`` (an offset) ends open segments."""
    head = timeline_legend()
    if not lanes or width < 30 or height < 5:
        return _fit(head, width)
    span = max(now, 1.0, *(v for ln in lanes for v in (ln.submitted, ln.started, ln.ended)
                           if v is not None))
    labels = [ln.label if len(ln.label) <= 30 else ln.label[:29] + "…" for ln in lanes]
    n = len(lanes)

    def draw(plt: Any, fig: Any) -> None:
        def seg(x0: float, x1: float, y: float, symbol: str, rgb: tuple[int, int, int]) -> None:
            sig = fig.signal([x0, max(x0, x1)], [y, y], marker=plt.marker(symbol, rgb))
            sig.lines()
            fig.draw(sig)

        def point(x: float, y: float, symbol: str, rgb: tuple[int, int, int]) -> None:
            fig.draw(fig.signal([x], [y], marker=plt.marker(symbol, rgb)))

        for i, ln in enumerate(lanes):
            y = n - 1 - i  # the first strategy on top
            if ln.submitted is None:
                continue
            queued_until = ln.started if ln.started is not None else (
                ln.ended if ln.ended is not None else now)
            seg(ln.submitted, queued_until, y, "─", _QUEUED)
            if ln.started is not None:
                run_until = ln.ended if ln.ended is not None else now
                seg(ln.started, run_until, y, "━", _WON if ln.winner else _RUNNING)
                if ln.winner:
                    point(ln.started, y, "★", _WON)
            if ln.ended is not None:
                if ln.end in ("cancelled",):
                    point(ln.ended, y, "✗", _QUEUED)
                elif ln.end in ("failed", "refused") or (ln.end and ln.end not in
                                                         ("COMPLETED", "won")):
                    point(ln.ended, y, "✗", _BAD)
                else:
                    point(ln.ended, y, "■", _WON)
        fig.ruler(0).lim(0, span)
        fig.ruler(0).ticks([0, span / 2, span],
                           [_offset_label(0), _offset_label(span / 2), _offset_label(span)])
        if roomy:  # a blank row above, between and below the lanes
            fig.ruler(1).lim(-0.5, n - 0.5)
        else:
            fig.ruler(1).lim(-0.5 if n == 1 else 0, 0.5 if n == 1 else n - 1)
        fig.ruler(1).ticks(list(range(n)), list(reversed(labels)))

    # plotext's frame takes 3 rows (top, bottom, tick labels); the legend row one more
    roomy = height - 1 >= 2 * n + 1 + 3
    rows = 2 * n + 1 + 3 if roomy else height - 1
    return _fit(Text("\n").join([head, plot(draw, width, max(rows, 5))]), width)


class _SizedChart(Static):
    """A chart drawn at the widget's real content size: again on every resize and new data."""

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        region = self.content_region
        if region.width <= 0 or region.height <= 0:
            return
        self.update(self._render_at(region.width, region.height))

    def _render_at(self, w: int, h: int) -> Any:
        raise NotImplementedError


class HistoryChart(_SizedChart):
    """A Static that re-renders the history chart on data change and on resize."""

    DEFAULT_CSS = """
    HistoryChart { height: 1fr; min-height: 8; width: 1fr; }
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("", *args, **kwargs)
        self._history: Mapping[str, Sequence[tuple[datetime, int]]] = {}

    def set_history(self, history: Mapping[str, Sequence[tuple[datetime, int]]]) -> None:
        self._history = history
        self._redraw()

    def _render_at(self, w: int, h: int) -> Any:
        return render_history(self._history, w, h)


class TimelineChart(_SizedChart):
    """The Race pane's timeline, re-rendered at its real size on new events and on resize."""

    DEFAULT_CSS = """
    TimelineChart { height: 1fr; min-height: 6; width: 1fr; }
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("", *args, **kwargs)
        self._lanes: Sequence[TimelineLane] = ()
        self._now = 0.0

    def set_lanes(self, lanes: Sequence[TimelineLane], now: float) -> None:
        self._lanes, self._now = tuple(lanes), now
        self._redraw()

    def _render_at(self, w: int, h: int) -> Any:
        return render_timeline(self._lanes, self._now, w, h) if self._lanes else ""
