"""Messages workers post to the app.

Workers do the remote work and never touch widgets; they post one of these, the app's handlers
update :class:`rv_tui.tui.state.AppState`, and the panes re-render from it.  High-rate messages
(log batches) are batched by the worker, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from rv_tui.cluster.base import ClusterSnapshot, JobInfo


class ClusterPolled(Message):
    """One poll finished: the snapshot, the user's jobs and backfill windows (if probed)."""

    def __init__(self, snapshot: ClusterSnapshot, jobs: list[JobInfo], duration: float,
                 windows: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.jobs = jobs
        self.duration = duration
        self.windows = windows or {}


class PollFailed(Message):
    """A poll failed (connection drop, timeout, Slurm error); panes keep their last data."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__()
        self.message = message
        self.hint = hint


class ConnectionChanged(Message):
    """The SSH connection's state changed (connected, reconnecting, lost)."""

    def __init__(self, state: str, detail: str = "") -> None:
        super().__init__()
        self.state = state
        self.detail = detail


class CommandRecorded(Message):
    """A remote command (or, for the demo, a cluster call) finished."""

    def __init__(self, record: Any) -> None:
        super().__init__()
        self.record = record


class PlanReady(Message):
    """A dry-run launch for the form: the plan and (``launch``) the workspace it would sync."""

    def __init__(self, plan: Any, launch: Any = None) -> None:
        super().__init__()
        self.plan = plan
        self.launch = launch


class LaunchNote(Message):
    """Progress of the launch preparation (syncing, dependencies, snapshot) before submission."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class OperationFailed(Message):
    """A user-started operation failed; shown as a notification with the hint."""

    def __init__(self, what: str, message: str, hint: str | None = None) -> None:
        super().__init__()
        self.what = what
        self.message = message
        self.hint = hint


class RaceStarted(Message):
    def __init__(self, group_id: str | None, strategies: list[Any]) -> None:
        super().__init__()
        self.group_id = group_id
        self.strategies = strategies


class RaceEventArrived(Message):
    """One event from the race engine (``group_id``: which launch; several can race at once)."""

    def __init__(self, event: Any, group_id: str | None = None) -> None:
        super().__init__()
        self.event = event
        self.group_id = group_id


class RaceFinished(Message):
    def __init__(self, winner_job_id: str | None) -> None:
        super().__init__()
        self.winner_job_id = winner_job_id


@dataclass(frozen=True)
class LogEntry:
    """One log line as the log pane stores it (Textual-free, small)."""

    node: int | None
    stream: str  # "out" | "err" | "rv" (rv's own status markers)
    text: str
    progress: bool = False  # a progress-bar update: replaces the previous one of its source


class LogBatch(Message):
    """A batch of log lines (the follower batches so the UI handles a few messages per second)."""

    def __init__(self, job_id: str, entries: list[LogEntry]) -> None:
        super().__init__()
        self.job_id = job_id
        self.entries = entries


class LogEnded(Message):
    def __init__(self, job_id: str, reason: str = "") -> None:
        super().__init__()
        self.job_id = job_id
        self.reason = reason


class AttachReady(Message):
    """The ``ssh -t`` argv for a shell in a job, built by a worker; the app runs it suspended."""

    def __init__(self, job_id: str, argv: list[str]) -> None:
        super().__init__()
        self.job_id = job_id
        self.argv = argv


class EnvLoaded(Message):
    def __init__(self, variables: dict[str, str]) -> None:
        super().__init__()
        self.variables = variables


class JobsLookedUp(Message):
    """Final states (and exit codes) of jobs that left the queue, from one ``cluster.jobs(ids)``."""

    def __init__(self, jobs: list[JobInfo]) -> None:
        super().__init__()
        self.jobs = jobs


class JobsCancelled(Message):
    def __init__(self, job_ids: list[str]) -> None:
        super().__init__()
        self.job_ids = job_ids


@dataclass
class Notice:
    """Plain data for notifications raised by non-UI code paths."""

    title: str
    message: str
    severity: str = "information"
    extra: dict[str, Any] = field(default_factory=dict)
