"""One job query for a dashboard poll: the user's jobs AND every partition's queue depth.

Why: slurmctld pays per RPC. ``squeue`` is two (REQUEST_PARTITION_INFO + REQUEST_JOB_INFO) even
with ``--local``, and the dashboard used three of them a poll (queue depth, the user's jobs,
their restart counts). ``scontrol show job -o`` is one REQUEST_JOB_INFO (measured with ``sdiag``
on Slurm 22.05) and carries every field rv reads, restart counts included. ``awk`` on the login
node keeps the transfer small: the user's lines go out whole, everyone else's jobs only as
``uniq -c``-style counts in the :func:`~rv_tui.slurm.parsers.parse_queue_counts` format.

``scontrol -o`` lines are ``Key=value`` with free text (job name, comment, paths) unquoted, so a
name such as ``x UserId=alice(1)`` could make a line ambiguous. A user line is trusted only when
every key rv reads occurs in it exactly once (:func:`trusted_line`); otherwise :func:`parse_poll`
returns its job id (the line's first word, which free text cannot move) and the caller asks
about that id alone. Counts are cosmetic and taken as read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import tzinfo

from rv_tui.slurm.model import TERMINAL_STATES, JobInfo, PartitionQueue
from rv_tui.quoting import q
from rv_tui.slurm.parsers import parse_queue_counts, parse_scontrol_jobs

#: Marks the count lines in :func:`poll_jobs_command` output (never starts a record line).
COUNT_MARK = "#Q "
#: Keys a trusted user line holds exactly once (free text must not fake any of them).
_ONCE = ("JobId", "JobName", "UserId", "JobState", "Reason", "Restarts", "RunTime", "TimeLimit",
         "SubmitTime", "StartTime", "Partition", "NodeList", "NumNodes")
#: Keys a trusted line holds at most once.
_AT_MOST_ONCE = ("TresPerNode", "Comment", "ArrayJobId", "ArrayTaskId", "HetJobId", "HetJobOffset")

_AWK = r"""
function val(k,   i, r) { i = index($0, " " k "="); if (!i) return ""; r = substr($0, i + length(k) + 2); sub(/ .*/, "", r); return r }
/^JobId=/ {
  if (u != "" && index($0, " UserId=" u "(")) print
  st = val("JobState"); g = val("TresPerNode"); if (g == "") g = "N/A"
  if (st == "PENDING" || st == "RUNNING" || st == "CONFIGURING") n[val("Partition") s st s val("NumNodes") s g]++
  next
}
END { for (k in n) print "#Q " n[k] " " k }
"""


def poll_jobs_command(user: str | None) -> str:
    """``scontrol show job -o`` (one RPC): ``user``'s job lines whole, all jobs as counts.

    stderr is kept (Slurm's "Unable to contact slurm controller" arrives there); the exit
    status is awk's, so the caller judges the answer by stderr."""
    return (f"scontrol show job -o | awk -v u={q(user or '')} -v s='\\037' {q(_AWK.strip())}")


@dataclass(frozen=True)
class PollAnswer:
    """What one :func:`poll_jobs_command` said."""

    #: The user's active jobs, shaped as ``squeue``'s default listing (trusted lines only).
    jobs: list[JobInfo]
    queues: dict[str, PartitionQueue]
    #: Ids of lines free text made ambiguous (ask about them precisely).
    ambiguous: tuple[str, ...] = ()


#: Key syntax as :func:`~rv_tui.slurm.parsers.parse_scontrol_record` reads it.
_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")
#: Keys scontrol prints right after ``Comment=`` (22.05: StdErr; others for other versions);
#: anything else there means the comment holds key-like text.
_AFTER_COMMENT = frozenset({"StdErr", "StdIn", "StdOut", "Extra", "AdminComment", "Power",
                            "MailUser", "Reservation", "OverSubscribe"})


def trusted_line(line: str) -> bool:
    """Free text (job name, comment) cannot have faked a key rv reads: each occurs exactly
    once, the name is followed by ``UserId=`` and the comment by what scontrol puts there."""
    keys = [m.group(1) for m in _KEY_RE.finditer(line)]
    if any(keys.count(k) != 1 for k in _ONCE) or any(keys.count(k) > 1 for k in _AT_MOST_ONCE):
        return False
    at = keys.index("JobName")
    if at + 1 >= len(keys) or keys[at + 1] != "UserId":
        return False
    if "Comment" in keys:
        at = keys.index("Comment")
        if at + 1 < len(keys) and keys[at + 1] not in _AFTER_COMMENT:
            return False
    return True


def _squeue_id(job: JobInfo, line: str) -> str:
    """The id as ``squeue %i`` prints it (``123_4``, ``123_[5-9]``, ``123+0``)."""
    arr = re.search(r" ArrayJobId=(\d+) ArrayTaskId=(\S+)", line)
    if arr:
        task = arr.group(2)
        return f"{arr.group(1)}_{task}" if task.isdigit() else f"{arr.group(1)}_[{task}]"
    het = re.search(r" HetJobId=(\d+) HetJobOffset=(\d+)", line)
    if het:
        return f"{het.group(1)}+{het.group(2)}"
    return job.job_id


def parse_poll(text: str, tz: tzinfo, user: str) -> PollAnswer:
    """Parse :func:`poll_jobs_command` output for ``user``.

    Jobs are what ``squeue -u user`` (default states) gives: terminal jobs left out, and no
    exit code or log paths (squeue has none); restart counts are filled."""
    counts = "\n".join(ln[len(COUNT_MARK):] for ln in text.splitlines() if ln.startswith(COUNT_MARK))
    queues = parse_queue_counts(counts)
    jobs: list[JobInfo] = []
    unsure: list[str] = []
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        parsed = parse_scontrol_jobs(line, tz) if trusted_line(line) else []
        if not parsed:
            m = re.match(r"JobId=(\d+)", line)
            if m:
                unsure.append(m.group(1))
            continue
        job = parsed[0]
        if job.user != user or job.state in TERMINAL_STATES:
            continue
        jobs.append(replace(job, job_id=_squeue_id(job, line), exit_code=None, exit_signal=None,
                            stdout_path=None, stderr_path=None))
    return PollAnswer(jobs, queues, tuple(unsure))
