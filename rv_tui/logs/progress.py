"""Progress bars in logs: recognise them and keep only their latest state.

tqdm and friends redraw a bar with ``\r``; in a log file a whole epoch of redraws becomes one
enormous line (or, when the writer adds newlines, hundreds of bar lines).  A reader wants the
bar's latest state, so faces show :func:`collapse` of a line and let one progress line of a
source replace the previous one (:class:`ProgressCollapser`, and the ring buffer).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Protocol

# "45%|####      | 45/100" (tqdm), "[=====>    ] 52%" (keras), "  7%|"...
_BAR_RE = re.compile(r"\d{1,3}%\s*\|.*\||\[[=#>\-. ]{5,}\]\s*\d{1,3}%")


def is_progress(text: str) -> bool:
    """True for carriage-return redraws and tqdm/keras-style bar lines."""
    return "\r" in text or _BAR_RE.search(text) is not None


def collapse(text: str) -> str:
    """The last non-empty ``\\r`` segment: what a terminal would show after the redraws."""
    if "\r" not in text:
        return text
    for seg in reversed(text.split("\r")):
        if seg:
            return seg
    return ""


class _Line(Protocol):
    is_progress: bool

    @property
    def source_key(self) -> Hashable: ...


class ProgressCollapser:
    """For outputs that cannot redraw (pipes, one-shot reads): hold back a source's progress
    line until something else from that source arrives, so only the latest bar state is printed."""

    def __init__(self) -> None:
        self._held: dict[Hashable, _Line] = {}

    def feed(self, line: _Line) -> list[_Line]:
        key = line.source_key
        if line.is_progress:
            self._held[key] = line
            return []
        held = self._held.pop(key, None)
        return [held, line] if held is not None else [line]

    def flush(self) -> list[_Line]:
        out = sorted(self._held.values(), key=lambda ln: getattr(ln, "seq", 0))
        self._held.clear()
        return out
