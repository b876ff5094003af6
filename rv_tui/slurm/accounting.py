"""Slurm accounting (sacct, sacctmgr, scontrol partitions): commands and parsers.

Why a module of its own: jobs leave squeue ``MinJobAge`` seconds after they end (30-300 s on
real clusters); afterwards only the accounting database knows their final state, exit code and
requeue count, and only it (with the partitions' QOS) knows the per-user GPU limits Slurm will
enforce.  Everything here is pure (text in, dataclasses out) so the demo cluster and the tests
use the same parsers on recorded output.

Facts of Slurm 22.05 that shape it (checked on the local test cluster):

* ``sacct --format`` has ``WorkDir`` and ``SubmitLine`` but no ``StdOut``/``StdErr`` (added in
  23.02): the output path is read from the submit line's ``-o``/``-e`` when given there, else it
  is Slurm's default ``<WorkDir>/slurm-<id>.out``; rv's own jobs are found by rv's log naming.
* There is no ``Restarts`` field: each requeue leaves a ``REQUEUED`` record, which ``-D``
  (``--duplicates``) lists, so the count is the number of those records.
* A cluster without slurmdbd answers ``Slurm accounting storage is disabled`` (exit 1).
* States read ``CANCELLED by 1001``; the free-text fields (SubmitLine, WorkDir, JobName) may hold
  the separator or even newlines, so SubmitLine comes last and a record starts only at a line
  beginning with a job id and a separator.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo

from rv_tui.slurm.model import History, JobInfo
from rv_tui.quoting import q

SEP = "\x1f"

#: sacct fields in output order; SubmitLine (free text) last on purpose.
SACCT_FIELDS: tuple[str, ...] = (
    "JobID", "JobName", "User", "State", "ExitCode", "Partition", "NNodes", "NodeList",
    "AllocTRES", "ReqTRES", "ElapsedRaw", "TimelimitRaw", "Submit", "Start", "End", "Reason",
    "WorkDir", "SubmitLine",
)

#: A job id: digits, an optional array task (``_4``) or pending range (``_[1-9,12]``), het ``+1``
#: (what builders accept, so an id squeue gave never breaks the sacct batch).
_ID_PART = r"\d+(?:_\d+|_\[[\d,\-]+\])?(?:\+\d+)?"
_ID_RE = re.compile(r"^" + _ID_PART + r"$")
_RECORD_START = re.compile(r"^" + _ID_PART + SEP)
_NULLS = {"", "(null)", "N/A", "None", "Unknown", "(None)", "n/a"}

DISABLED_TEXT = "accounting storage is disabled"
#: What rv says wherever history would have come from sacct.
LIMITED_NOTE = ("Slurm accounting (sacct) is disabled on this cluster: history is limited to "
                "rv's own records and jobs still in the queue")
UNREACHABLE_NOTE = "the Slurm accounting database did not answer: history is limited for now"


def is_job_id(job_id: str) -> bool:
    return bool(_ID_RE.match(str(job_id)))


def _check_id(job_id: str) -> str:
    if not _ID_RE.match(job_id):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return job_id


def sacct_command(job_ids: Sequence[str]) -> str:
    """One ``sacct`` for every id: allocations only (-X), every requeued record (-D)."""
    ids = ",".join(_check_id(str(j)) for j in job_ids)
    return " ".join(["sacct", "-X", "-D", "-n", "-P", q(f"--delimiter={SEP}"), "-j", q(ids),
                     q("--format=" + ",".join(SACCT_FIELDS))])


def history_unavailable(stderr: str) -> str | None:
    """The user-facing note when sacct did not answer, else None."""
    low = stderr.lower()
    if DISABLED_TEXT in low or "not running a supported accounting_storage" in low:
        return LIMITED_NOTE
    if low.strip():
        return UNREACHABLE_NOTE
    return None


def _records(text: str) -> list[list[str]]:
    rows: list[str] = []
    for line in text.split("\n"):
        if _RECORD_START.match(line):
            rows.append(line)
        elif rows:
            rows[-1] += "\n" + line  # a newline inside the free-text last field
    out = []
    n = len(SACCT_FIELDS)
    for row in rows:
        parts = row.split(SEP)
        if len(parts) < n:
            continue
        # a separator inside the free text can only be SubmitLine's (last): join the rest
        out.append(parts[:n - 1] + [SEP.join(parts[n - 1:]).rstrip("\n")])
    return out


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def gpus_from_tres(tres: str) -> dict[str, int]:
    """``gres/gpu:h200=4`` entries of a TRES string -> ``{"h200": 4}`` (untyped gres/gpu and
    other TRES ignored)."""
    out: dict[str, int] = {}
    for item in tres.split(","):
        key, _, val = item.strip().partition("=")
        if key.startswith("gres/gpu:") and val.strip().isdigit():
            out[key[len("gres/gpu:"):]] = out.get(key[len("gres/gpu:"):], 0) + int(val)
    return out


def _gres_per_node(tres: str, nodes: int) -> str:
    gpus = gpus_from_tres(tres)
    if not gpus:
        total = next((int(v) for k, _, v in (i.partition("=") for i in tres.split(","))
                      if k == "gres/gpu" and v.isdigit()), 0)
        return f"gpu:{total // max(nodes, 1)}" if total else ""
    gtype, count = next(iter(gpus.items()))
    return f"gpu:{gtype}:{count // max(nodes, 1)}"


#: sbatch options that take no value (so the next word is not theirs).
_SBATCH_FLAGS = frozenset({
    "--parsable", "--requeue", "--no-requeue", "-Q", "--quiet", "--exclusive", "-H", "--hold",
    "--test-only", "-v", "--verbose", "-W", "--wait", "-O", "--overcommit", "--contiguous",
    "--spread-job", "--use-min-nodes", "--ignore-pbs", "--get-user-env", "--no-kill", "-k",
    "-h", "--help", "--usage", "-V", "--version", "-s", "--oversubscribe", "--reboot",
})


def output_paths(submit_line: str, work_dir: str | None, job_id: str, name: str,
                 user: str) -> tuple[str | None, str | None]:
    """stdout/stderr paths from a submit line's ``-o``/``-e`` (``%j %x %u %A %a %%`` expanded,
    relative to WorkDir); None where the line does not say (the job script may)."""
    try:
        argv = shlex.split(submit_line)
    except ValueError:
        return None, None
    found: dict[str, str] = {}
    i = 1 if argv[:1] and argv[0].endswith("sbatch") else 0
    while i < len(argv):
        a = argv[i]
        if a == "--wrap" or a.startswith("--wrap=") or not a.startswith("-"):
            break  # the wrapped command or the script: the rest is not sbatch's
        opt, eq, val = a.partition("=")
        if a.startswith("--"):
            if not eq and opt not in _SBATCH_FLAGS and i + 1 < len(argv):
                val, i = argv[i + 1], i + 1
        else:
            opt, val = a[:2], a[2:]
            if not val and opt not in _SBATCH_FLAGS and i + 1 < len(argv):
                val, i = argv[i + 1], i + 1
        slot = {"-o": "o", "--output": "o", "-e": "e", "--error": "e"}.get(opt)
        if slot:
            found[slot] = val
        i += 1
    out, err = found.get("o"), found.get("e")

    def expand(p: str | None) -> str | None:
        if not p:
            return None
        head = job_id.split("_")[0]
        p = (p.replace("%%", "\0").replace("%j", job_id).replace("%A", head).replace("%x", name)
             .replace("%u", user).replace("%a", job_id.split("_")[1] if "_" in job_id else "")
             .replace("\0", "%"))
        if not p.startswith("/") and work_dir:
            p = f"{work_dir.rstrip('/')}/{p}"
        return p

    return expand(out), expand(err)


def parse_sacct(text: str, tz: tzinfo) -> dict[str, JobInfo]:
    """``sacct_command`` output -> the latest record per job id, with ``restart_count`` the
    number of its REQUEUED records."""
    from rv_tui.slurm.parsers import effective_exit, expand_nodelist, parse_slurm_datetime

    by_id: dict[str, list[list[str]]] = {}
    for f in _records(text):
        by_id.setdefault(f[0], []).append(f)
    out: dict[str, JobInfo] = {}
    for job_id, rows in by_id.items():
        (jid, name, user, state_s, ec, part, nnodes, nodelist, alloc, req, elapsed, limit,
         submit, start, end, reason, workdir, submit_line) = rows[-1]
        state = (state_s.split() or ["UNKNOWN"])[0].upper()
        m = re.match(r"(\d+):(\d+)", ec.strip())
        code, sig = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        n = _int(nnodes) or 1
        restarts = sum(1 for r in rows if r[3].split()[:1] == ["REQUEUED"])
        wd = None if workdir.strip() in _NULLS else workdir.strip()
        so, se = output_paths(submit_line, wd, jid, name, user)
        limit_min = _int(limit)
        out[job_id] = JobInfo(
            job_id=jid, name=name, user=user, state=state,
            partition=part,
            reason=(f"cancelled by uid {cancelled_by(state_s)}" if cancelled_by(state_s)
                    else None if reason.strip() in _NULLS else reason.strip()),
            nodes=expand_nodelist(nodelist) if nodelist.strip() not in _NULLS | {"None assigned"}
            else (),
            num_nodes=n, gres=_gres_per_node(alloc or req, n),
            elapsed_s=_int(elapsed) or 0,
            time_limit_s=limit_min * 60 if limit_min is not None else None,
            start_time=parse_slurm_datetime(start, tz),
            submit_time=parse_slurm_datetime(submit, tz),
            exit_code=effective_exit(state, code, sig) if state not in ("PENDING", "RUNNING",
                                                                        "REQUEUED") else None,
            exit_signal=sig or None,
            stdout_path=so, stderr_path=se if se else so if so else None,
            restart_count=restarts,
            work_dir=wd,
            from_accounting=True,
        )
    return out


def cancelled_by(state_text: str) -> str | None:
    """``CANCELLED by 1001`` -> ``"1001"``."""
    m = re.match(r"CANCELLED by (\S+)", state_text.strip())
    return m.group(1) if m else None


# --------------------------------------------------------------------------- limits

#: ``sacctmgr show qos``: the QOS limits rv reads (MaxTRESPerUser, MaxTRESPerJob).  sacctmgr
#: has no --delimiter: "|" it is (QOS names and TRES strings never hold one).
QOS_COMMAND = " ".join(["sacctmgr", "-n", "-P", "show", "qos",
                        q("format=Name,MaxTRESPU,MaxTRESPerJob,Flags")])
#: Each partition's QOS (``QoS=`` in ``scontrol -o show partition``).
PARTITION_QOS_COMMAND = "scontrol -o show partition"


@dataclass(frozen=True)
class QosLimits:
    """Per-user and per-job GPU limits by GRES type (``{"h200": 4}``) of one QOS."""

    name: str
    max_per_user: dict[str, int] = field(default_factory=dict)
    max_per_job: dict[str, int] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


def parse_qos(text: str) -> dict[str, QosLimits]:
    """``QOS_COMMAND`` output -> ``{name: QosLimits}``."""
    out: dict[str, QosLimits] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0].strip():
            continue
        name = parts[0].strip()
        flags = tuple(f for f in (parts[3].split(",") if len(parts) > 3 else []) if f.strip())
        out[name] = QosLimits(name, gpus_from_tres(parts[1]), gpus_from_tres(parts[2]), flags)
    return out


def parse_partition_qos(text: str) -> dict[str, str]:
    """``scontrol -o show partition`` -> ``{partition: qos}`` (partitions without a QOS left out)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.search(r"(?:^|\s)PartitionName=(\S+)", line)
        qm = re.search(r"(?:^|\s)QoS=(\S+)", line)
        if m and qm and qm.group(1) not in _NULLS:
            out[m.group(1)] = qm.group(1)
    return out


@dataclass(frozen=True)
class ClusterLimits:
    """GPU limits Slurm enforces per partition (from the partitions' QOS), by GRES type."""

    per_user: dict[str, dict[str, int]] = field(default_factory=dict)  # partition -> type -> N
    per_job: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = "cluster"  # "cluster" (sacctmgr) or "table" (rv's GPU table)

    def user_limit(self, partition: str, gres_type: str) -> int | None:
        return self.per_user.get(partition, {}).get(gres_type)

    def job_limit(self, partition: str, gres_type: str) -> int | None:
        return self.per_job.get(partition, {}).get(gres_type)


def cluster_limits(qos_text: str, partitions_text: str) -> ClusterLimits | None:
    """Combine the two outputs; None when the cluster states no GPU limit at all (then rv's
    GPU table applies)."""
    qos = parse_qos(qos_text)
    parts = parse_partition_qos(partitions_text)
    per_user = {p: dict(qos[name].max_per_user) for p, name in parts.items()
                if name in qos and qos[name].max_per_user}
    per_job = {p: dict(qos[name].max_per_job) for p, name in parts.items()
               if name in qos and qos[name].max_per_job}
    if not per_user and not per_job:
        return None
    return ClusterLimits(per_user, per_job)


#: Job states whose GPUs count against a per-user limit now (held) or next (queued).
HELD_STATES = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"})
QUEUED_STATES = frozenset({"PENDING", "REQUEUED"})


def gpu_use_by_type(jobs: Iterable[JobInfo], user: str,
                    states: frozenset[str] = HELD_STATES | QUEUED_STATES) -> dict[str, int]:
    """GPUs the user holds or waits for, by GRES type: jobs of ``user`` in ``states`` (running
    and pending by default; ``gres`` is per node, so times the node count)."""
    use: dict[str, int] = {}
    for j in jobs:
        if j.user != user or j.state not in states:
            continue
        m = re.match(r"gpu:([A-Za-z][\w.-]*):(\d+)", j.gres or "")
        if m:
            use[m.group(1)] = use.get(m.group(1), 0) + int(m.group(2)) * max(j.num_nodes, 1)
    return use


def with_history(infos: dict[str, JobInfo], history: History) -> dict[str, JobInfo]:
    """Fill ids the queue no longer knows from history (queue answers win)."""
    merged = dict(infos)
    for jid, h in history.jobs.items():
        if jid not in merged:
            merged[jid] = h
        elif merged[jid].is_terminal and not merged[jid].restart_count and h.restart_count:
            merged[jid] = replace(merged[jid], restart_count=h.restart_count)
    return merged
