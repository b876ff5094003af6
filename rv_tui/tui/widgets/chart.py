"""Free GPUs per type over the session: a braille step chart drawn straight into a Rich Text.

Why our own renderer: plotext (6.x) clamps its figure to the terminal size it detects (80 columns
under a headless test or an SVG export, so the chart filled half the pane) and draws its legend
inside the plot where it hides data.  Free-GPU counts are a step function of a few series, which
~100 lines of braille plotting draw exactly, at the widget's real width, on any theme: axes and
labels use no colour of their own (the theme's text colour), and each GPU type has one fixed,
distinct colour (mid-tone, readable on light and dark backgrounds) shown in a legend row above
the plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

#: One distinct colour per GPU type (the same in every chart and theme).
TYPE_COLOURS: dict[str, str] = {
    "a100_40": "#3b82f6",  # blue
    "a100_80": "#0891b2",  # teal
    "a40": "#dc2626",  # red
    "a6000": "#ea580c",  # orange
    "h200": "#9333ea",  # purple
    "mig": "#16a34a",  # green
    "rtx3090": "#a16207",  # ochre
    "v100": "#db2777",  # pink
}
_SPARE = ("#64748b", "#65a30d", "#0d9488", "#c026d3")

# braille dot bits: (dx, dy) within a 2x4 cell
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def colour_of(gtype: str, others: Sequence[str] = ()) -> str:
    """The fixed colour of ``gtype`` (unknown types get a spare colour by sorted position)."""
    if gtype in TYPE_COLOURS:
        return TYPE_COLOURS[gtype]
    unknown = sorted(t for t in others if t not in TYPE_COLOURS)
    return _SPARE[unknown.index(gtype) % len(_SPARE)] if gtype in unknown else _SPARE[0]


def legend(types: Sequence[str], title: str = "free GPUs per type") -> Text:
    out = Text(f"{title}  ", style="bold")
    for t in types:
        out.append("■ ", style=Style(color=colour_of(t, types)))
        out.append(f"{t}  ")
    return out


def _fmt_minutes(m: float) -> str:
    return f"{m:.0f}m" if m < 120 else f"{m / 60:.1f}h"


def render_history(history: Mapping[str, Sequence[tuple[datetime, int]]], width: int,
                   height: int, title: str = "free GPUs per type") -> Text:
    """Legend row + step chart of ``history`` sized ``width`` x ``height`` cells."""
    series = {k: list(v) for k, v in sorted(history.items()) if v}
    if not series:
        return Text("waiting for the first poll…", style="dim")
    if width < 20 or height < 5:
        return Text("")
    types = list(series)
    t0 = min(p[0][0] for p in series.values())
    t1 = max(p[-1][0] for p in series.values())
    span = max((t1 - t0).total_seconds() / 60.0, 1e-9)
    ymax = max(1, *(free for pts in series.values() for _, free in pts))
    ylabels = [str(ymax), str(ymax // 2) if ymax >= 4 else "", "0"]
    lw = max(len(s) for s in ylabels) + 1
    cols, rows = width - lw - 1, height - 3  # legend row, x axis, x labels
    if cols < 4 or rows < 2:
        return legend(types, title)
    dw, dh = cols * 2, rows * 4
    cells: dict[tuple[int, int], dict[str, int]] = {}

    def dot(x: int, y: int, t: str) -> None:
        x, y = min(max(x, 0), dw - 1), min(max(y, 0), dh - 1)
        bits = cells.setdefault((y // 4, x // 2), {})
        bits[t] = bits.get(t, 0) | _DOTS[y % 4][x % 2]

    for t, pts in series.items():
        xy = [(round((p[0] - t0).total_seconds() / 60.0 / span * (dw - 1)) if span > 1e-6 else 0,
               round((1 - p[1] / ymax) * (dh - 1))) for p in pts]
        if len(xy) == 1:
            xy.append((dw - 1, xy[0][1]))
        for (xa, ya), (xb, yb) in zip(xy, xy[1:]):  # a step: along at the old value, then jump
            for x in range(xa, xb + 1):
                dot(x, ya, t)
            for y in range(min(ya, yb), max(ya, yb) + 1):
                dot(xb, y, t)
    out = legend(types, title)
    out.append("\n")
    label_rows = {0: ylabels[0], rows // 2: ylabels[1], rows - 1: ylabels[2]}
    for r in range(rows):
        out.append(label_rows[r].rjust(lw - 1) + "┤" if r in label_rows else " " * (lw - 1) + "│",
                   style="dim")
        for c in range(cols):
            bits = cells.get((r, c))
            if not bits:
                out.append(" ")
                continue
            owner = max(bits, key=lambda k: (bin(bits[k]).count("1"), k))
            out.append(chr(0x2800 | _or(bits)), style=Style(color=colour_of(owner, types)))
        out.append("\n")
    out.append(" " * lw + "└" + "─" * cols + "\n", style="dim")
    left, mid = f"-{_fmt_minutes(span)}", f"-{_fmt_minutes(span / 2)}"
    axis = [" "] * (cols + 1)
    for pos, label in ((0, left), (cols // 2 - len(mid) // 2, mid), (cols + 1 - 3, "now")):
        for i, ch in enumerate(label):
            if 0 <= pos + i <= cols:
                axis[pos + i] = ch
    out.append(" " * lw + "".join(axis), style="dim")
    return out


def _or(bits: dict[str, int]) -> int:
    v = 0
    for b in bits.values():
        v |= b
    return v


class HistoryChart(Static):
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

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        region = self.content_region
        w, h = region.width, region.height
        if w <= 0 or h <= 0:
            return
        self.update(render_history(self._history, w, h))
