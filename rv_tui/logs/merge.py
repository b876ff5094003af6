"""Merge a job's log files into one ordered stream of :class:`LogLine` events.

All files of a job (every node's ``.out`` and ``.err``) are followed over one long-lived stream
(``Cluster.stream_files``: one SSH channel running ``slurm/tail.py``'s command, or the demo's
simulation), so lines interleave in the order they arrived while each file keeps its own order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from rv_tui.cluster.base import Cluster
from rv_tui.logs.events import LogLine, LogSource
from rv_tui.logs.progress import is_progress


class Sequencer:
    """Turns (source, text) pairs into numbered LogLines; shared by the stream and one-shot reads."""

    def __init__(self, sources: Iterable[LogSource], start: int = 0) -> None:
        self.by_path = {s.path: s for s in sources}
        self.seq = start

    def line(self, source: LogSource, text: str) -> LogLine:
        self.seq += 1
        return LogLine(self.seq, source.node, source.stream, text, is_progress(text))

    def from_path(self, path: str, text: str) -> LogLine | None:
        src = self.by_path.get(path)
        return None if src is None else self.line(src, text)


async def merge_stream(cluster: Cluster, sources: Sequence[LogSource], *, from_start: bool = True,
                       sequencer: Sequencer | None = None) -> AsyncIterator[LogLine]:
    """Follow ``sources`` until the consumer stops; closing this generator closes the stream."""
    if not sources:
        return
    seqr = sequencer or Sequencer(sources)
    stream = cluster.stream_files([s.path for s in sources], from_start=from_start)
    try:
        async for fl in stream:
            line = seqr.from_path(fl.path, fl.line)
            if line is not None:
                yield line
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


#: The most of one finished file a one-shot read holds without ``last`` (a full LogRing and more).
BACKLOG_LINES = 100_000
BACKLOG_BYTES = 16 * 1024 * 1024


def split_lines(data: bytes) -> list[str]:
    """A file's bytes as lines the way ``tail`` sees them (only ``\\n`` ends a line)."""
    text = data.decode("utf-8", errors="replace")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


async def read_sources(cluster: Cluster, sources: Sequence[LogSource], *, last: int | None = None,
                       sequencer: Sequencer | None = None) -> tuple[list[LogLine], list[str]]:
    """One-shot read of finished files, in file order; (lines, paths that could not be read).

    Only each file's tail is read, on the cluster (``Cluster.tail_file``: ``tail -n`` on the
    login node), so a multi-GB log never crosses the network or sits in memory: its last ``last``
    lines, or without ``last`` (the TUI, ``rv run -f`` of a finished job) at most
    :data:`BACKLOG_LINES` lines / :data:`BACKLOG_BYTES` bytes per file (``rv logs --pull`` gets
    whole files).
    """
    seqr = sequencer or Sequencer(sources)
    out: list[LogLine] = []
    missing: list[str] = []
    for src in sources:
        try:
            if last is not None and last <= 0:
                continue
            data = (await cluster.tail_file(src.path, last) if last is not None
                    else await cluster.tail_file(src.path, BACKLOG_LINES, max_bytes=BACKLOG_BYTES))
        except Exception:  # not written (yet), removed, or unreadable: say so, keep going
            missing.append(src.path)
            continue
        lines = split_lines(data)
        if last is not None:
            lines = lines[-last:] if last > 0 else []
        out.extend(seqr.line(src, t) for t in lines)
    return out, missing
