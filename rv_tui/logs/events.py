"""The events the log merger produces: one shape for the CLI, ``--json`` and the TUI's log pane.

Why events and not strings: the faces decide how to show a node prefix, a stderr mark or a
progress bar; the core only says what arrived, from where, in which order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rv_tui.logs.progress import collapse

Stream = Literal["out", "err"]


@dataclass(frozen=True)
class LogSource:
    """One remote log file and what it holds: node index (None: the batch script) and stream."""

    path: str
    node: int | None
    stream: Stream

    @property
    def label(self) -> str:
        return "batch" if self.node is None else f"node{self.node}"


@dataclass(frozen=True)
class LogLine:
    """One line as it arrived; ``seq`` is the arrival order across all of a job's files."""

    seq: int
    node: int | None
    stream: Stream
    text: str  # raw line without newline; may contain "\r" (progress bars)
    is_progress: bool = False

    @property
    def display(self) -> str:
        """The line as a terminal would finally show it (the latest state of a progress bar)."""
        return collapse(self.text)

    @property
    def source_key(self) -> tuple[int | None, str]:
        return (self.node, self.stream)

    def to_json(self, *, raw: bool = False) -> dict[str, object]:
        return {"seq": self.seq, "node": self.node, "stream": self.stream,
                "line": self.text if raw else self.display}


@dataclass(frozen=True)
class JobStatus:
    """The job's state changed while we wait for it (pending reason, started)."""

    job_id: str
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class JobEnded:
    """The job reached a terminal state (or vanished); the follower stops after this."""

    job_id: str
    state: str
    exit_code: int
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"end": True, "job_id": self.job_id, "state": self.state, "exit_code": self.exit_code}


LogEvent = LogLine | JobStatus | JobEnded
