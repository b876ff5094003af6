"""A bounded per-job log buffer: memory stays flat however long a job runs.

Holds at most ``max_lines`` lines and about ``max_bytes`` of text; older lines fall off the front
(``dropped`` counts them; ``rv logs --pull`` still gets the whole file).  A progress line replaces
its source's previous progress line in place (the bar keeps its position, like a terminal), so a
tqdm bar redrawn a million times holds one slot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from rv_tui.logs.events import LogLine

DEFAULT_MAX_LINES = 10_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Longer lines are cut in the ring (the file keeps them whole).
MAX_LINE_CHARS = 64 * 1024


@dataclass
class _Slot:
    line: LogLine
    size: int
    alive: bool = True


class LogRing:
    """Bounded buffer of :class:`LogLine` in arrival order, collapsing progress redraws."""

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES, max_bytes: int = DEFAULT_MAX_BYTES,
                 *, collapse_progress: bool = True) -> None:
        if max_lines < 1 or max_bytes < 1:
            raise ValueError("ring limits must be positive")
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.collapse_progress = collapse_progress
        self._slots: deque[_Slot] = deque()
        self._progress: dict[Hashable, _Slot] = {}
        self.bytes = 0
        self.dropped = 0
        self.total = 0  # lines ever appended (including replaced progress redraws)

    def append(self, line: LogLine) -> None:
        self.total += 1
        if len(line.text) > MAX_LINE_CHARS:
            line = LogLine(line.seq, line.node, line.stream,
                           line.text[:MAX_LINE_CHARS] + f" … [{len(line.text) - MAX_LINE_CHARS} chars cut]",
                           line.is_progress)
        size = len(line.text) + 64
        key = line.source_key
        if self.collapse_progress and line.is_progress:
            slot = self._progress.get(key)
            if slot is not None and slot.alive:
                self.bytes += size - slot.size
                slot.line, slot.size = line, size
                self._trim()
                return
        else:
            self._progress.pop(key, None)
        slot = _Slot(line, size)
        self._slots.append(slot)
        self.bytes += size
        if self.collapse_progress and line.is_progress:
            self._progress[key] = slot
        self._trim()

    def _trim(self) -> None:
        while self._slots and (len(self._slots) > self.max_lines or self.bytes > self.max_bytes):
            old = self._slots.popleft()
            old.alive = False
            self.bytes -= old.size
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[LogLine]:
        return (s.line for s in list(self._slots))

    def lines(self, last: int | None = None) -> list[LogLine]:
        """A snapshot of the held lines (the last ``last`` of them)."""
        out = [s.line for s in self._slots]
        return out[-last:] if last else out

    def clear(self) -> None:
        self._slots.clear()
        self._progress.clear()
        self.bytes = 0
