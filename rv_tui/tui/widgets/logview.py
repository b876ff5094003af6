"""A virtual log view: only visible rows are rendered, so thousands of lines/s stay cheap.

toolong's lesson: use the Line API (``render_line``) over a plain list, append in batches, and
when the user scrolls away stop following and count "+N new lines" instead of jumping.
Lines carry their node (coloured prefix) and stream (stderr marked with a red bar).  A filter
(node, stderr-only, search text) rebuilds the visible index from the bounded buffer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from rv_tui.tui.messages import LogEntry

#: Node prefix colours (readable on light and dark backgrounds).
NODE_COLOURS = ("#1e90ff", "#d2691e", "#2e8b57", "#c71585", "#b8860b", "#20b2aa", "#9370db",
                "#cd5c5c")
_ERR_BAR = Style(color="#ff3b3b", bold=True)
_MATCH = Style(reverse=True)
_RV = Style(italic=True, dim=True)


class LogView(ScrollView, can_focus=True):
    """Bounded, filterable, follow-able log lines."""

    DEFAULT_CSS = """
    LogView { height: 1fr; }
    """

    follow: reactive[bool] = reactive(True)
    pending: reactive[int] = reactive(0)  # lines arrived while not following

    def __init__(self, *, max_lines: int = 200_000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_lines = max_lines
        self.entries: deque[LogEntry] = deque(maxlen=max_lines)
        self.rows: list[LogEntry] = []
        self.node_filter: int | None = None
        self.stderr_only = False
        self.search = ""
        self.show_prefix = True
        self._width = 0
        self._auto_scrolling = False
        self.total = 0

    # ------------------------------------------------------------------ data
    def clear_lines(self) -> None:
        self.entries.clear()
        self.rows = []
        self._width = 0
        self.total = 0
        self.pending = 0
        self.virtual_size = Size(0, 0)
        self.refresh()

    def _keep(self, e: LogEntry) -> bool:
        if self.node_filter is not None and e.node != self.node_filter:
            return False
        if self.stderr_only and e.stream != "err":
            return False
        if self.search and self.search.lower() not in e.text.lower():
            return False
        return True

    def append(self, entries: Iterable[LogEntry]) -> None:
        batch = self._collapse(list(entries))
        if not batch:
            return
        self.total += len(batch)
        dropped = max(0, len(self.entries) + len(batch) - self.max_lines)
        self.entries.extend(batch)
        kept = [e for e in batch if self._keep(e)] if self._filtering else batch
        if dropped and len(self.rows) + len(kept) > self.max_lines:
            self._rebuild()
        else:
            self.rows.extend(kept)
        for e in kept:
            if len(e.text) > self._width:
                self._width = len(e.text)
        self._resize()
        if self.follow:
            self._scroll_to_end()
        else:
            self.pending += len(kept)

    def _collapse(self, batch: list[LogEntry]) -> list[LogEntry]:
        """A progress update replaces the previous progress line of the same node and stream."""
        out: list[LogEntry] = []
        for e in batch:
            if e.progress:
                prev = out[-1] if out else (self.entries[-1] if self.entries else None)
                if prev is not None and prev.progress and (prev.node, prev.stream) == (e.node, e.stream):
                    if out:
                        out[-1] = e
                    else:
                        self.entries[-1] = e
                        if self.rows and self.rows[-1] is prev:
                            self.rows[-1] = e
                            self.refresh()
                    continue
            out.append(e)
        return out

    @property
    def _filtering(self) -> bool:
        return self.node_filter is not None or self.stderr_only or bool(self.search)

    def set_filter(self, *, node: int | None | str = "keep", stderr_only: bool | None = None,
                   search: str | None = None) -> None:
        if node != "keep":
            self.node_filter = node  # type: ignore[assignment]
        if stderr_only is not None:
            self.stderr_only = stderr_only
        if search is not None:
            self.search = search
        self._rebuild()
        self._resize()
        if self.follow:
            self._scroll_to_end()
        self.refresh()

    def _rebuild(self) -> None:
        self.rows = [e for e in self.entries if self._keep(e)] if self._filtering else list(self.entries)
        self._width = max((len(e.text) for e in self.rows[-2000:]), default=0)

    def _resize(self) -> None:
        prefix = 10 if self.show_prefix else 1
        self.virtual_size = Size(self._width + prefix, len(self.rows))

    def _scroll_to_end(self) -> None:
        self._auto_scrolling = True
        self.scroll_to(y=max(0, len(self.rows) - self.scrollable_content_region.height),
                       animate=False, immediate=True)
        self._auto_scrolling = False

    def empty_reason(self) -> str:
        """Why a filtered view is empty (shown instead of a blank pane)."""
        if self.stderr_only:
            return "── nothing on stderr (yet); e shows every stream again ──"
        if self.node_filter is not None:
            return f"── no lines from node{self.node_filter} (yet); n for the next node ──"
        return f"── no line matches /{self.search}; esc clears the search ──"

    # ------------------------------------------------------------------ follow / pause
    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self._auto_scrolling:
            return
        # content that shrank (a new job's empty log) moves the offset up without the user
        if new < old and self.follow and new < self.max_scroll_y:
            self.follow = False
        elif not self.follow and new >= self.max_scroll_y and new > old:
            self.resume()

    def resume(self) -> None:
        self.follow = True
        self.pending = 0
        self._scroll_to_end()

    def pause(self) -> None:
        self.follow = False

    # ------------------------------------------------------------------ rendering
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        if index >= len(self.rows):
            if index == 0 and self.entries and self._filtering:  # a filter hides everything
                why = self.empty_reason()
                return Strip([Segment(why, self.rich_style + _RV)]).crop(0, width) \
                    .extend_cell_length(width, self.rich_style)
            return Strip.blank(width, self.rich_style)
        e = self.rows[index]
        base = self.rich_style
        segs: list[Segment] = []
        if e.stream == "rv":  # rv's own markers (job pending/started/ended)
            strip = Strip([Segment(e.text, base + _RV)])
            return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, base)
        segs.append(Segment("▌" if e.stream == "err" else " ", base + _ERR_BAR))
        if self.show_prefix:
            if e.node is None:
                segs.append(Segment(" " * 8, base))
            else:
                colour = NODE_COLOURS[e.node % len(NODE_COLOURS)]
                segs.append(Segment(f"[node{e.node}]".ljust(8), base + Style(color=colour, bold=True)))
            segs.append(Segment(" ", base))
        text = e.text
        if self.search:
            low, needle = text.lower(), self.search.lower()
            pos, last = low.find(needle), 0
            while pos >= 0:
                segs.append(Segment(text[last:pos], base))
                segs.append(Segment(text[pos:pos + len(needle)], base + _MATCH))
                last = pos + len(needle)
                pos = low.find(needle, last)
            segs.append(Segment(text[last:], base))
        else:
            segs.append(Segment(text, base))
        strip = Strip(segs)
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, base)
