"""What the app knows, in one place: message handlers write it, panes read it.

Keeping this a plain dataclass (no Textual) makes the "last data with its age" rule easy: a
failed poll changes ``connection`` and nothing else, so every pane keeps showing what it had.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from rv_tui.cluster.base import ClusterSnapshot, JobInfo

#: Points of free-GPU history kept per type (at a 5 s poll: one hour).
HISTORY_POINTS = 720


@dataclass(frozen=True)
class BackfillWindow:
    """The longest walltime that would start now on a partition; ``capped``: the probe tried
    nothing longer, so the real window is at least this."""

    seconds: int
    capped: bool = False


@dataclass
class AppState:
    snapshot: ClusterSnapshot | None = None
    received_at: float | None = None  # app clock when the snapshot arrived
    jobs: list[JobInfo] = field(default_factory=list)
    windows: dict[str, BackfillWindow] = field(default_factory=dict)  # partition -> window
    #: final state of jobs that left the queue (looked up once): job id -> JobInfo
    final: dict[str, JobInfo] = field(default_factory=dict)
    history: dict[str, deque[tuple[datetime, int]]] = field(default_factory=dict)
    connection: str = "connecting"  # connecting | connected | reconnecting
    connection_detail: str = ""
    failures: int = 0
    last_error: str | None = None
    poll_duration: float | None = None
    #: recent connection states as the pool reported them (newest last), for the log and tests
    transitions: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    def record_snapshot(self, snap: ClusterSnapshot, jobs: list[JobInfo], received_at: float,
                        windows: dict[str, BackfillWindow] | None = None) -> None:
        """Store a poll and extend the free-GPU history (one point per distinct cluster time)."""
        self.snapshot = snap
        self.jobs = list(jobs)
        self.received_at = received_at
        if windows:
            self.windows = dict(windows)
        self.connection = "connected"
        self.connection_detail = ""
        self.failures = 0
        self.last_error = None
        for gtype, (free, _total) in snap.free_by_type().items():
            points = self.history.setdefault(gtype, deque(maxlen=HISTORY_POINTS))
            if points and points[-1][0] == snap.taken_at:
                points[-1] = (snap.taken_at, free)
            else:
                points.append((snap.taken_at, free))

    def record_failure(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self.connection = "reconnecting" if self.snapshot is not None or self.failures > 1 else "connecting"
        self.connection_detail = message

    def record_connection(self, state: str, detail: str) -> None:
        """The pool reported a connection change (before any poll notices it)."""
        self.transitions.append(state)
        if state in ("reconnecting", "disconnected"):
            self.connection = "reconnecting"
            self.connection_detail = self.last_error = detail
        elif state == "failed":
            self.connection = "lost"
            self.connection_detail = self.last_error = detail
        elif state == "connected" and self.connection in ("reconnecting", "lost"):
            self.connection = "connected"
            self.connection_detail = ""
            self.last_error = None
            self.failures = 0

    def age(self, now: float) -> float | None:
        """Seconds since the last good poll, or None before the first one."""
        return None if self.received_at is None else max(0.0, now - self.received_at)
