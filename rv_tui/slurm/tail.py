"""One long-lived remote command that follows many files, and the decoder for its output.

``rv logs -f`` on a multi-node job follows 2..2N files.  Polling them (the original's ``wc -l`` +
``tail -n +K`` every 3 s, three round trips per poll) is slow and racy; instead one SSH channel
runs :func:`tail_command`, which starts one ``tail -F`` per file and frames every output line with
the index of the file it came from.  :class:`TailDecoder` turns the framed stream back into
:class:`~rv_tui.cluster.base.FileLine` objects.

Framing (why it cannot be confused by file content):

* every frame line is written by our own ``awk`` and starts ``<index>:`` (a complete line, or the
  last piece of a long one) or ``<index>+`` (a non-final piece of a long line); content is never at
  the start of a stream line, so a log line that *looks* like a frame is just payload;
* long lines are cut into pieces of at most :data:`CHUNK_BYTES` bytes (never inside a UTF-8
  character), so every frame is written with one ``write()`` of less than ``PIPE_BUF`` bytes into a
  pipe and frames from different files can never interleave mid-line;
* characters that a line splitter might treat as line breaks (``\\r`` from progress bars, ``\\v``,
  ``\\f``, ``\\x1c``-``\\x1e``, U+0085, U+2028, U+2029) are escaped as ``%r`` etc. and ``%`` itself
  as ``%%``, so one content line is always one stream line whatever splitter the transport uses;
* a heartbeat line ``#`` is written every :data:`HEARTBEAT_S` seconds.  It is what ends the remote
  side when the channel closes: the write fails, the script exits and its ``EXIT`` trap kills the
  whole process group (the tails and awks), so closing the stream leaves no orphaned ``tail``.

Only POSIX ``sh``, coreutils/busybox ``tail -F`` and any ``awk`` (mawk, gawk, busybox) are needed;
python is not required on the login node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rv_tui.slurm.model import FileLine
from rv_tui.quoting import q, q_path

#: Maximum payload bytes per frame line (well under Linux's PIPE_BUF of 4096, so writes are atomic).
CHUNK_BYTES = 1024
#: Seconds between heartbeat lines; bounds how long remote tails outlive a closed channel (~2x).
HEARTBEAT_S = 2

HEARTBEAT = "#"

# The awk program: escape, chunk, frame.  LC_ALL=C makes length/substr count bytes.  Each frame is
# one printf of one pre-built string: mawk -W interactive writes every printf argument separately.
# \302\205 is U+0085, \342\200\250/\251 are U+2028/U+2029 in UTF-8.
_AWK = (
    "{ s = $0;"
    " if (s ~ /[%\\r\\013\\014\\034\\035\\036]|\\302\\205|\\342\\200[\\250\\251]/) {"
    "  gsub(/%/, \"%%\", s); gsub(/\\r/, \"%r\", s); gsub(/\\013/, \"%v\", s);"
    "  gsub(/\\014/, \"%f\", s); gsub(/\\034/, \"%1\", s); gsub(/\\035/, \"%2\", s);"
    "  gsub(/\\036/, \"%3\", s); gsub(/\\302\\205/, \"%n\", s);"
    "  gsub(/\\342\\200\\250/, \"%l\", s); gsub(/\\342\\200\\251/, \"%p\", s) }"
    " while (length(s) > W) { n = W;"
    "  while (n > W - 3 && substr(s, n + 1, 1) ~ /^[\\200-\\277]/) n--;"
    "  printf \"%s\", (i \"+\" substr(s, 1, n) \"\\n\"); fflush(); s = substr(s, n + 1) }"
    " printf \"%s\", (i \":\" s \"\\n\"); fflush() }"
)

_UNESCAPE = {
    "%": "%", "r": "\r", "v": "\v", "f": "\f", "1": "\x1c", "2": "\x1d", "3": "\x1e",
    "n": "\x85", "l": "\u2028", "p": "\u2029",
}
_ESC_RE = re.compile(r"%(.)", re.DOTALL)
_FRAME_RE = re.compile(r"(\d{1,6})([:+])")


def tail_command(
    paths: Sequence[str],
    *,
    from_start: bool = True,
    heartbeat_s: int = HEARTBEAT_S,
    chunk_bytes: int = CHUNK_BYTES,
) -> str:
    """Build the remote command that follows ``paths`` (in this order) until its channel closes.

    ``from_start`` replays each file from its first line (``tail -n +1``); otherwise only lines
    written after the command starts are sent.  Files may not exist yet (``tail -F`` retries),
    may be truncated or replaced.  The command must run as its own process group, as sshd runs
    every exec request (``setsid``); it kills only that group when it ends.
    """
    if not paths:
        raise ValueError("tail_command needs at least one path")
    if chunk_bytes < 16 or chunk_bytes > 3000:
        raise ValueError("chunk_bytes must be in 16..3000 (frames must stay below PIPE_BUF)")
    start = "+1" if from_start else "0"
    parts = []
    for idx, path in enumerate(paths):
        parts.append(
            f"(tail -F -n {start} -- {q_path(path)} 2>/dev/null"
            f" | LC_ALL=C $A -v i={idx} -v W={int(chunk_bytes)} {q(_AWK)}) &"
        )
    script = (
        'trap \'trap - EXIT; kill -s TERM -- -$$ 2>/dev/null\' EXIT HUP INT TERM PIPE; '
        # mawk fills its whole input buffer before processing unless -W interactive; other awks
        # (gawk, busybox) process pipe input as it comes and may reject the option.
        "A=awk; x=$(awk -W interactive 'BEGIN{}' </dev/null 2>&1) && [ -z \"$x\" ]"
        " && A='awk -W interactive'; "
        "{ " + " ".join(parts)
        + f" while echo {q(HEARTBEAT)}; do sleep {int(heartbeat_s)}; done; }} | cat"
    )
    return "exec sh -c " + q(script)


class TailDecoder:
    """Maps framed lines of :func:`tail_command` back to :class:`FileLine` (stateful per stream)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths: list[str] = list(paths)
        self._pending: dict[int, list[str]] = {}
        self.heartbeats = 0
        self.malformed = 0

    def feed(self, line: str) -> FileLine | None:
        """One stream line in, a complete file line out (or None: heartbeat, partial, junk)."""
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r") and not line.endswith("%r"):
            line = line[:-1]  # a transport that kept \r\n; content \r is always escaped
        if line == HEARTBEAT:
            self.heartbeats += 1
            return None
        m = _FRAME_RE.match(line)
        if m is None or int(m.group(1)) >= len(self.paths):
            self.malformed += 1
            return None
        idx = int(m.group(1))
        payload = line[m.end():]
        if m.group(2) == "+":
            self._pending.setdefault(idx, []).append(payload)
            return None
        pieces = self._pending.pop(idx, None)
        if pieces:
            pieces.append(payload)
            payload = "".join(pieces)
        return FileLine(self.paths[idx], unescape(payload))


def unescape(payload: str) -> str:
    """Undo the awk program's ``%`` escapes (unknown escapes are kept verbatim)."""
    if "%" not in payload:
        return payload
    return _ESC_RE.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(0)), payload)
