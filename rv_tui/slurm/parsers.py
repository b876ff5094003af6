"""Slurm output parsers: text from the commands in :mod:`rv_tui.slurm.builders` -> dataclasses.

Why: Slurm prints local wall-clock times without a zone, packs GPU use into GRES strings, lists a
node once per partition and encodes signals in ``ExitCode=A:B``.  Each of those is a place where
the original rv went wrong (misread time zones, guessed GPU use, double-counted nodes, reported a
signal-killed job as success).  The parsers are pure and tested on outputs recorded from the real
test cluster (``tests/fixtures/slurm/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rv_tui.slurm.model import JobInfo, NodeState, PartitionQueue
from rv_tui.durations import parse_slurm_time
from rv_tui.gpus import types_for_gres
from rv_tui.slurm.builders import SEP, SINFO_FIELDS, SQUEUE_JOB_FIELDS

_NULLS = {"", "(null)", "N/A", "None", "n/a", "Unknown", "(None)"}


# --------------------------------------------------------------------------- clock / times


@dataclass(frozen=True)
class ClusterClock:
    """The cluster's "now" and the zone its Slurm commands print times in."""

    now: datetime  # aware
    tz: tzinfo

    def localize(self, naive: datetime) -> datetime:
        """Attach the cluster zone to a naive Slurm timestamp (DST-correct when the zone is named)."""
        return naive.replace(tzinfo=self.tz)


def parse_clock(text: str) -> ClusterClock:
    """Parse :data:`~rv_tui.slurm.builders.CLOCK_COMMAND` output.

    The first line (``2026-11-23T06:39:01-0500``) is authoritative for "now".  The zone name comes
    from ``$TZ`` or the ``/etc/localtime`` link; it is used only when its offset agrees with the
    printed one (so a laptop without that zone, or a lying ``$TZ``, falls back to the fixed offset).
    """
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or not lines[0]:
        raise ValueError("empty clock output")
    now = datetime.strptime(lines[0], "%Y-%m-%dT%H:%M:%S%z")
    fixed = timezone(now.utcoffset() or timedelta(0))
    tz: tzinfo = fixed
    for cand in lines[1:]:
        name = cand.lstrip(":")
        if "zoneinfo/" in name:
            name = name.split("zoneinfo/", 1)[1]
        if not name:
            continue
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
        if now.astimezone(zone).utcoffset() == now.utcoffset():
            tz = zone
            break
    return ClusterClock(now=now.astimezone(tz), tz=tz)


def parse_slurm_datetime(text: str, tz: tzinfo) -> datetime | None:
    """``2026-11-23T08:39:11`` (cluster local time) -> aware datetime; None for N/A/Unknown."""
    text = text.strip()
    if text in _NULLS:
        return None
    try:
        naive = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return naive.replace(tzinfo=tz)


# --------------------------------------------------------------------------- node lists / gres


def expand_nodelist(text: str) -> tuple[str, ...]:
    """Expand a Slurm hostlist (``a[1-2,05],b3``, ``r[1-2]n[01-02]``) into node names."""
    text = text.strip()
    if text in _NULLS:
        return ()
    out: list[str] = []
    for item in _split_top(text, ","):
        out.extend(_expand_one(item))
    return tuple(out)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on *sep* outside brackets and parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p]


def _expand_one(item: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if not m:
        return [item]
    head, tail = item[: m.start()], item[m.end():]
    out: list[str] = []
    for rng in m.group(1).split(","):
        if "-" in rng:
            lo, hi = rng.split("-", 1)
            width = len(lo)
            for i in range(int(lo), int(hi) + 1):
                out.extend(_expand_one(f"{head}{i:0{width}d}{tail}"))
        else:
            out.extend(_expand_one(f"{head}{rng}{tail}"))
    return out


def parse_gres(text: str) -> dict[str, int]:
    """GPU counts per GRES type: ``gpu:a6000:3(IDX:0-2)`` -> ``{"a6000": 3}``.

    Handles several entries (``gpu:a100:4(S:0),gpu:a100:2(S:1)`` sums), a ``gres:`` prefix
    (squeue ``%b``), untyped ``gpu:0`` and ``(null)``.
    """
    text = text.strip()
    out: dict[str, int] = {}
    if text in _NULLS:
        return out
    for entry in _split_top(text, ","):
        entry = re.sub(r"\(.*\)$", "", entry.strip())
        if entry.startswith("gres:"):
            entry = entry[5:]
        elif entry.startswith("gres/"):
            entry = entry[5:].replace("=", ":")
        parts = entry.split(":")
        if not parts or parts[0] != "gpu":
            continue
        if len(parts) == 2:
            typ, count = "", parts[1]
        elif len(parts) >= 3:
            typ, count = parts[1], parts[-1]
        else:
            continue
        try:
            n = int(count)
        except ValueError:
            n = 1
        out[typ] = out.get(typ, 0) + n
    return out


def gres_per_node(text: str) -> str:
    """Normalise a job GRES (``gres:gpu:a6000:4``, ``gres/gpu:a6000=4``) to ``gpu:a6000:4``."""
    counts = parse_gres(text)
    if not counts:
        return ""
    typ, n = next(iter(counts.items()))
    return f"gpu:{typ}:{n}" if typ else f"gpu:{n}"


# --------------------------------------------------------------------------- sinfo


_STATE_FLAGS = "*~#!%$@^-+"


def normalize_node_state(text: str) -> str:
    """``MIXED*``/``idle+drain``/``drained*`` -> lower case, flags stripped, compounds kept."""
    s = text.strip().lower()
    return s.rstrip(_STATE_FLAGS) or "unknown"


def parse_sinfo_nodes(text: str) -> list[NodeState]:
    """Parse :func:`~rv_tui.slurm.builders.sinfo_nodes_command` output; one NodeState per node.

    sinfo prints a node once per partition; rows are merged so each node (and its GPUs) is
    counted once, with all of its partitions listed (default-partition ``*`` stripped).
    """
    nodes: dict[str, NodeState] = {}
    parts: dict[str, list[str]] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        fields = raw.split(SEP)
        if len(fields) < len(SINFO_FIELDS):
            continue
        name, part, state, gres, used, cpus, mem, alloc_mem, feats = (f.strip() for f in fields[:9])
        partition = part.rstrip("*")
        parts.setdefault(name, [])
        if partition and partition not in parts[name]:
            parts[name].append(partition)
        if name in nodes:
            continue
        features = tuple(f for f in feats.split(",") if f and f not in _NULLS)
        total = parse_gres(gres)
        used_counts = parse_gres(used)
        gpu_type = None
        gpus_total = 0
        gres_name = None
        for typ, n in total.items():
            if typ and n > 0:
                gres_name, gpus_total = typ, n
                break
        if gres_name:
            gpu_type = types_for_gres(gres_name, features)
        gpus_used = used_counts.get(gres_name or "", 0) if gres_name else 0
        if gres_name and gres_name not in used_counts:
            gpus_used = sum(used_counts.values())
        c_alloc, c_total = _cpus(cpus)
        nodes[name] = NodeState(
            name=name, partitions=(), state=normalize_node_state(state), gpu_type=gpu_type,
            gpus_total=gpus_total, gpus_used=min(gpus_used, gpus_total), cpus_total=c_total,
            cpus_alloc=c_alloc, memory_mb=_int(mem), memory_alloc_mb=_int(alloc_mem),
            features=features,
        )
    out = []
    for name, node in nodes.items():
        out.append(NodeState(**{**node.__dict__, "partitions": tuple(parts[name])}))
    return out


def _cpus(text: str) -> tuple[int, int]:
    """``A/I/O/T`` -> (allocated, total)."""
    bits = text.split("/")
    if len(bits) == 4:
        return _int(bits[0]), _int(bits[3])
    return 0, 0


def _int(text: str) -> int:
    m = re.match(r"\d+", text.strip())
    return int(m.group(0)) if m else 0


# --------------------------------------------------------------------------- squeue


def parse_queue_counts(text: str) -> dict[str, PartitionQueue]:
    """Parse :func:`~rv_tui.slurm.builders.squeue_queue_command` (``uniq -c``) output.

    A pending job listed for several partitions (``gpu-a6000,gpu``) counts in each of them.
    """
    acc: dict[str, list[int]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"(\d+)\s+(.*)$", line)
        if not m:
            continue
        count = int(m.group(1))
        fields = m.group(2).split(SEP)
        if len(fields) < 4:
            continue
        partitions, state, nnodes, gres = fields[0], fields[1].upper(), _int(fields[2]) or 1, fields[3]
        gpus = sum(parse_gres(gres).values()) * nnodes
        for part in partitions.split(","):
            part = part.strip()
            if not part:
                continue
            cur = acc.setdefault(part, [0, 0, 0])
            if state == "PENDING":
                cur[1] += count
                cur[2] += count * gpus
            else:
                cur[0] += count
    return {p: PartitionQueue(partition=p, running_jobs=v[0], pending_jobs=v[1], pending_gpus=v[2])
            for p, v in sorted(acc.items())}


def parse_squeue_jobs(text: str, tz: tzinfo) -> list[JobInfo]:
    """Parse :func:`~rv_tui.slurm.builders.squeue_jobs_command` output (times in zone *tz*)."""
    keys = [k for k, _ in SQUEUE_JOB_FIELDS]
    jobs: list[JobInfo] = []
    for raw in text.split("\n"):
        if not raw.strip() or SEP not in raw:
            continue
        fields = raw.split(SEP, len(keys) - 1)
        if len(fields) < len(keys):
            continue
        row = dict(zip(keys, fields))
        state = row["state"].strip().upper().split()[0] if row["state"].strip() else "UNKNOWN"
        reason = row["reason"].strip().strip("()")
        comment = row["comment"].strip()
        jobs.append(JobInfo(
            job_id=row["job_id"].strip(),
            name=row["name"].rstrip("\r"),
            user=row["user"].strip(),
            state=state,
            partition=row["partition"].strip(),
            reason=None if reason in _NULLS else reason,
            nodes=expand_nodelist(row["nodes"]),
            num_nodes=_int(row["num_nodes"]) or 1,
            gres=gres_per_node(row["gres"]),
            elapsed_s=parse_slurm_time(row["elapsed"]) or 0,
            time_limit_s=parse_slurm_time(row["time_limit"]),
            start_time=parse_slurm_datetime(row["start_time"], tz),
            submit_time=parse_slurm_datetime(row["submit_time"], tz),
            comment=None if comment in _NULLS else comment,
        ))
    return jobs


# --------------------------------------------------------------------------- scontrol


_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_record(line: str) -> dict[str, str]:
    """One ``scontrol show ... -o`` line -> ``{Key: value}`` (values may contain spaces).

    Keys are matched only at a word start, so ``ReqNodeList=`` never shadows ``NodeList=``
    (original bug 13).
    """
    out: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(line))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        out.setdefault(m.group(1), line[m.end():end].strip())
    return out


def effective_exit(state: str, exit_code: int | None, signal: int | None) -> int | None:
    """The exit status a caller should report: never 0 for a job that did not complete.

    Slurm reports a job killed by a signal as ``0:15`` and a timed-out one often as ``0:0``; both
    would look like success (original bug 17).  Signals map to ``128 + signal`` (shell
    convention), TIMEOUT to 124 (``timeout(1)``), any other unsuccessful end to at least 1.
    """
    if exit_code is None:
        return None
    if signal:
        return exit_code if exit_code else 128 + signal
    if state == "TIMEOUT" and exit_code == 0:
        return 124
    if state in _UNSUCCESSFUL and exit_code == 0:
        return 1
    return exit_code


_UNSUCCESSFUL = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
                 "CANCELLED", "REVOKED"}


def parse_scontrol_jobs(text: str, tz: tzinfo) -> list[JobInfo]:
    """Parse :func:`~rv_tui.slurm.builders.scontrol_jobs_command` output (error lines skipped)."""
    jobs: list[JobInfo] = []
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        rec = parse_scontrol_record(line)
        state = (rec.get("JobState") or "UNKNOWN").split()[0].upper()
        code = sig = None
        ec = rec.get("ExitCode", "")
        m = re.match(r"(\d+):(\d+)", ec)
        if m:
            code, sig = int(m.group(1)), int(m.group(2))
        user = rec.get("UserId", "").split("(")[0]
        reason = rec.get("Reason", "")
        gres = rec.get("TresPerNode") or rec.get("Gres") or ""
        comment = rec.get("Comment", "")
        jobs.append(JobInfo(
            job_id=rec.get("JobId", ""),
            name=rec.get("JobName", ""),
            user=user,
            state=state,
            partition=rec.get("Partition", ""),
            reason=None if reason in _NULLS else reason,
            nodes=expand_nodelist(rec.get("NodeList", "")),
            num_nodes=_int(rec.get("NumNodes", "1")) or 1,
            gres=gres_per_node(gres),
            elapsed_s=parse_slurm_time(rec.get("RunTime", "")) or 0,
            time_limit_s=parse_slurm_time(rec.get("TimeLimit", "")),
            start_time=parse_slurm_datetime(rec.get("StartTime", ""), tz),
            submit_time=parse_slurm_datetime(rec.get("SubmitTime", ""), tz),
            exit_code=effective_exit(state, code, sig),
            exit_signal=sig or None,
            stdout_path=rec.get("StdOut") or None,
            stderr_path=rec.get("StdErr") or None,
            comment=None if comment in _NULLS else comment,
            restart_count=_int(rec.get("Restarts", "0")),
        ))
    return jobs


# --------------------------------------------------------------------------- query errors

#: What Slurm says about a job id it does not know (the only "this job is gone" answer).
INVALID_JOB_ID = "invalid job id"


def job_query_errors(text: str) -> list[str]:
    """Error lines of squeue/scontrol job queries other than "Invalid job id specified".

    Why: while slurmctld restarts (or is too busy) these commands print ``slurm_load_jobs error:
    Unable to contact slurm controller`` or ``Socket timed out`` and nothing else; that means
    "unknown, ask again", and must never be read as "the job vanished".  Record lines
    (``JobId=...``) and blank lines are not errors."""
    out = []
    for line in text.splitlines():
        low = line.strip().lower()
        if not low or line.startswith("JobId=") or INVALID_JOB_ID in low:
            continue
        if "error" in low or "unable to contact" in low or "timed out" in low:
            out.append(line.strip())
    return out


def parse_restart_counts(text: str) -> dict[str, int]:
    """``squeue -O JobID,RestartCnt`` output (SEP-separated) -> ``{job_id: restarts}``."""
    out: dict[str, int] = {}
    for raw in text.split("\n"):
        fields = [f.strip() for f in raw.split(SEP)]
        if len(fields) >= 2 and fields[0] and fields[1].isdigit():
            out[fields[0]] = int(fields[1])
    return out


# --------------------------------------------------------------------------- sbatch / scancel


_START_RE = re.compile(
    r"to start at (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?: using \d+ processors)?"
    r"(?: on nodes (\S+))?(?: in partition (\S+))?")


@dataclass(frozen=True)
class TestOnlyAnswer:
    start: datetime | None
    nodes: str | None
    partition: str | None
    error: str | None


def parse_test_only(text: str, tz: tzinfo) -> TestOnlyAnswer:
    """Parse ``sbatch --test-only`` output (stdout+stderr); the time is read in zone *tz*."""
    m = _START_RE.search(text)
    if m:
        start = parse_slurm_datetime(m.group(1), tz)
        return TestOnlyAnswer(start=start, nodes=m.group(2), partition=m.group(3), error=None)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    err = lines[-1] if lines else "no answer from sbatch --test-only"
    for prefix in ("sbatch: error: ", "allocation failure: "):
        if err.startswith(prefix):
            err = err[len(prefix):]
    return TestOnlyAnswer(start=None, nodes=None, partition=None, error=err)


def parse_sbatch_parsable(stdout: str) -> str | None:
    """``1000013`` or ``1000013;cluster`` -> ``1000013``; None when no id was printed."""
    for line in stdout.splitlines():
        line = line.strip()
        m = re.fullmatch(r"(\d+)(?:;\S+)?", line)
        if m:
            return m.group(1)
        m = re.search(r"Submitted batch job (\d+)", line)
        if m:
            return m.group(1)
    return None


#: scancel messages that mean "nothing to cancel any more", not a failure.
BENIGN_SCANCEL = ("already completing or completed", "invalid job id", "job has already finished",
                  "job/step already completing")


def scancel_errors(stderr: str) -> list[str]:
    """The scancel stderr lines that are real errors (finished/unknown ids are not)."""
    out = []
    for line in stderr.splitlines():
        low = line.strip().lower()
        if low and not any(b in low for b in BENIGN_SCANCEL):
            out.append(line.strip())
    return out
