"""Job logs: locate per-node files, merge them by arrival, collapse progress bars, bound memory.

Textual-free and event based: :func:`follow` yields :class:`LogLine` / :class:`JobStatus` /
:class:`JobEnded` for the CLI (``rv logs``) and the TUI's log pane alike.
"""

from rv_tui.logs.events import JobEnded, JobStatus, LogEvent, LogLine, LogSource
from rv_tui.logs.follow import exit_code_of, follow, follow_job, latest_job_id
from rv_tui.logs.locate import JobLogs, locate_logs
from rv_tui.logs.merge import merge_stream, read_sources
from rv_tui.logs.progress import ProgressCollapser, collapse, is_progress
from rv_tui.logs.ring import LogRing

__all__ = [
    "JobEnded", "JobLogs", "JobStatus", "LogEvent", "LogLine", "LogRing", "LogSource",
    "ProgressCollapser", "collapse", "exit_code_of", "follow", "follow_job", "is_progress",
    "latest_job_id", "locate_logs", "merge_stream", "read_sources",
]
