"""One fixed, distinct colour per GPU type, for every chart of both faces (Textual-free, so
``rv cost`` can use it without loading the dashboard)."""

from __future__ import annotations

from collections.abc import Sequence

#: Mid-tone colours, readable on light and dark backgrounds.
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


def colour_of(gtype: str, others: Sequence[str] = ()) -> str:
    """The fixed colour of ``gtype`` (unknown types get a spare colour by sorted position)."""
    if gtype in TYPE_COLOURS:
        return TYPE_COLOURS[gtype]
    unknown = sorted(t for t in others if t not in TYPE_COLOURS)
    return _SPARE[unknown.index(gtype) % len(_SPARE)] if gtype in unknown else _SPARE[0]


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
