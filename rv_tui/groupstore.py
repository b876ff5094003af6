"""The request store: which jobs belong to which race group, remembered locally and on the cluster.

A request (``rv run`` / ``rv up``) becomes several jobs, one per strategy.  ``rv ps`` groups them,
``rv stop`` cancels the siblings, the TUI draws them, and the winning job itself reads the sibling
list on the cluster to cancel the losers.  So the group is written twice: locally under
``rv_home()/groups/<id>.json`` (atomic, 0600) and remotely as ``<group_dir>/group.json`` plus
``<group_dir>/jobs`` (one job id per line) so another laptop or a later command can see it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rv_tui.config import rv_home
from rv_tui.fsutil import atomic_write
from rv_tui.paths import RemotePaths
from rv_tui.quoting import join, q

if TYPE_CHECKING:
    from rv_tui.allocator.model import Strategy
    from rv_tui.cluster.base import Cluster, JobInfo, JobSubmission, SubmitResult

#: Local records older than this are dropped when the store is written.
MAX_AGE_S = 30 * 86400


def new_group_id() -> str:
    """A short, path- and shell-safe group id that sorts by creation time (``g<time><rand>``)."""
    return f"g{int(time.time()):x}{secrets.token_hex(3)}"


@dataclass(frozen=True)
class GitInfo:
    branch: str | None = None
    commit: str | None = None
    dirty: bool = False

    @property
    def tag(self) -> str:
        """``branch@abc1234*`` as ps shows it."""
        if not self.branch and not self.commit:
            return ""
        return f"{self.branch or '?'}@{(self.commit or '?')[:7]}{'*' if self.dirty else ''}"


def git_info(cwd: str | os.PathLike[str] | None = None) -> GitInfo | None:
    """Branch, commit and dirtiness of the git repo at ``cwd`` (None outside a repo)."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch == "HEAD":
        branch = f"detached-{commit[:7]}"
    status = git("status", "--porcelain", "--untracked-files=no")
    return GitInfo(branch=branch, commit=commit, dirty=bool(status))


@dataclass(frozen=True)
class GroupJob:
    """One strategy of a group and the job it became (job_id None if its submission failed)."""

    job_id: str | None
    strategy_id: str
    label: str
    gpu_type: str
    partition: str
    nodes: int
    gpus_per_node: int
    kind: str = "direct"
    walltime_s: int = 0
    name: str = ""
    error: str | None = None

    @property
    def topology(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}"

    @classmethod
    def from_parts(cls, submission: "JobSubmission", job_id: str | None, strategy: "Strategy | None" = None,
                   error: str | None = None) -> "GroupJob":
        return cls(
            job_id=job_id,
            strategy_id=strategy.id if strategy else submission.partition,
            label=strategy.label if strategy else f"{submission.gpu_type} on {submission.partition}",
            gpu_type=submission.gpu_type,
            partition=submission.partition,
            nodes=submission.nodes,
            gpus_per_node=submission.gpus_per_node,
            kind=str(strategy.kind) if strategy else "direct",
            walltime_s=submission.walltime_s,
            name=submission.name,
            error=error,
        )


@dataclass(frozen=True)
class GroupRecord:
    """A request and the jobs its strategies became."""

    id: str
    kind: str  # "run" or "up"
    name: str
    command: str | None
    created_at: str  # ISO 8601, UTC
    jobs: tuple[GroupJob, ...] = ()
    cluster: str = ""
    user: str = ""
    git: GitInfo | None = None
    winner: str | None = None  # job id of the strategy that won the race, once known
    state: str = "racing"  # racing, won, failed, cancelled, left
    #: The winner's checkpoint chain in order (winner first, then each resubmitted segment), as
    #: the jobs append it to ``<group_dir>/segments``; empty until read from the cluster.
    segments: tuple[str, ...] = ()

    @property
    def job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs if j.job_id]

    @property
    def all_job_ids(self) -> list[str]:
        """The strategies' jobs and every later checkpoint segment: the whole request."""
        ids = self.job_ids
        return ids + [j for j in self.segments if j not in ids]

    @property
    def current_job(self) -> str | None:
        """The job that carries the request now: the chain's latest segment, else the winner."""
        return self.segments[-1] if self.segments else self.winner

    def segment_index(self, job_id: str) -> int | None:
        """1 for the winner, 2 for the first resubmission, ...; None outside the chain."""
        return self.segments.index(job_id) + 1 if job_id in self.segments else None

    def job(self, job_id: str) -> GroupJob | None:
        return next((j for j in self.jobs if j.job_id == job_id), None)

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def with_(self, **changes: Any) -> "GroupRecord":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["jobs"] = [asdict(j) for j in self.jobs]
        d["git"] = asdict(self.git) if self.git else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GroupRecord":
        jobs_fields = GroupJob.__dataclass_fields__
        jobs = tuple(GroupJob(**{k: v for k, v in j.items() if k in jobs_fields}) for j in d.get("jobs", ()))
        git = GitInfo(**d["git"]) if d.get("git") else None
        fields = {k: v for k, v in d.items()
                  if k in cls.__dataclass_fields__ and k not in ("jobs", "git", "segments")}
        segments = tuple(str(x) for x in d.get("segments") or () if _JOB_ID.fullmatch(str(x)))
        return cls(jobs=jobs, git=git, segments=segments, **fields)


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class GroupStore:
    """Local group records, one JSON file per group under ``<rv_home>/groups/`` (0600)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else rv_home() / "groups"
        #: Record files the last :meth:`all` could not read (faces warn about them; never deleted).
        self.unreadable: list[Path] = []

    def _path(self, group_id: str) -> Path:
        if not group_id or "/" in group_id or group_id.startswith("."):
            raise ValueError(f"bad group id {group_id!r}")
        return self.root / f"{group_id}.json"

    def save(self, record: GroupRecord) -> None:
        atomic_write(self._path(record.id), record.to_json(), mode=0o600)

    def get(self, group_id: str) -> GroupRecord | None:
        try:
            return GroupRecord.from_dict(json.loads(self._path(group_id).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def all(self) -> list[GroupRecord]:
        """Every readable record, newest first."""
        out = []
        self.unreadable = []
        if not self.root.is_dir():
            return out
        for p in self.root.glob("*.json"):
            try:
                out.append(GroupRecord.from_dict(json.loads(p.read_text())))
            except (OSError, ValueError, TypeError):
                self.unreadable.append(p)
        out.sort(key=lambda r: r.created_at, reverse=True)
        return out

    def delete(self, group_id: str) -> None:
        try:
            self._path(group_id).unlink()
        except FileNotFoundError:
            pass

    def prune(self, max_age_s: float = MAX_AGE_S) -> int:
        """Drop records older than ``max_age_s``; returns how many were removed."""
        cutoff = datetime.now(timezone.utc).timestamp() - max_age_s
        n = 0
        for rec in self.all():
            try:
                if rec.created.timestamp() < cutoff:
                    self.delete(rec.id)
                    n += 1
            except ValueError:
                continue
        return n

    def job_index(self, records: Iterable[GroupRecord] | None = None) -> dict[str, GroupRecord]:
        """job id -> its group record."""
        idx: dict[str, GroupRecord] = {}
        for rec in (self.all() if records is None else records):
            for jid in rec.all_job_ids:
                idx.setdefault(jid, rec)
        return idx

    def find_job(self, job_id: str) -> GroupRecord | None:
        return self.job_index().get(job_id)

    def by_name(self, name: str) -> list[GroupRecord]:
        """Records with this exact name (newest first)."""
        return [r for r in self.all() if r.name == name]


# ----------------------------------------------------------------------------- remote copy

def group_json_path(scratch: str, group_id: str) -> str:
    return f"{RemotePaths(scratch).group_dir(group_id)}/group.json"


def group_jobs_path(scratch: str, group_id: str) -> str:
    return f"{RemotePaths(scratch).group_dir(group_id)}/jobs"


async def publish_jobs(cluster: "Cluster", group_id: str, job_ids: Sequence[str]) -> None:
    """Write ``<group_dir>/jobs`` (ids one per line) so the winning job can cancel its siblings."""
    data = "".join(f"{j}\n" for j in job_ids)
    await _write(cluster, group_jobs_path(cluster.scratch, group_id), data)


async def publish_record(cluster: "Cluster", record: GroupRecord) -> None:
    """Write ``<group_dir>/group.json`` so other machines and later commands see the group."""
    await _write(cluster, group_json_path(cluster.scratch, record.id), record.to_json() + "\n")


async def _write(cluster: "Cluster", path: str, data: str) -> None:
    try:
        await cluster.write_file(path, data, 0o600)
    except Exception:  # the directory may not exist yet (a job normally creates it)
        await cluster.exec(join(["mkdir", "-p", path.rsplit("/", 1)[0]]))
        await cluster.write_file(path, data, 0o600)


async def ensure_group_dir(cluster: "Cluster", group_id: str) -> None:
    """Create the group directory on the cluster (before submission, so jobs can claim in it)."""
    gdir = RemotePaths(cluster.scratch).group_dir(group_id)
    res = await cluster.exec(join(["mkdir", "-p", "-m", "700", gdir]))
    if not res.ok:
        raise OSError(f"cannot create {gdir}: {res.stderr.strip()}")


async def fetch_remote_records(cluster: "Cluster", limit: int = 200) -> list[GroupRecord]:
    """Group records on the cluster's scratch (newest first); empty when unreadable."""
    gdir = RemotePaths(cluster.scratch).groups_dir
    marker = "@@rv-group@@"
    seg_marker = "@@rv-segments@@"
    cmd = (f"cd {q(gdir)} 2>/dev/null || exit 0; "
           f"for f in $(ls -t 2>/dev/null | head -n {int(limit)}); do "
           f"[ -f \"$f/group.json\" ] && {{ echo {q(marker)}; cat \"$f/group.json\"; "
           f"echo {q(seg_marker)}; cat \"$f/segments\" 2>/dev/null; }}; done")
    try:
        res = await cluster.exec(cmd, timeout=30)
    except Exception:
        return []
    out = []
    for chunk in res.stdout.split(marker):
        chunk, _, seg_text = chunk.partition(seg_marker)
        chunk = chunk.strip()
        if not chunk:
            continue
        try:
            rec = GroupRecord.from_dict(json.loads(chunk))
        except (ValueError, TypeError):
            continue
        segments = parse_segments(seg_text)
        out.append(rec.with_(segments=segments) if segments else rec)
    out.sort(key=lambda r: r.created_at, reverse=True)
    return out


def merge_records(local: Iterable[GroupRecord], remote: Iterable[GroupRecord]) -> list[GroupRecord]:
    """Union by id; the local copy wins (it is updated as the race goes), except that the chain
    of segments, which only the cluster knows, comes from the remote copy; newest first."""
    by_id: dict[str, GroupRecord] = {r.id: r for r in remote}
    for r in local:
        theirs = by_id.get(r.id)
        if theirs is not None and len(theirs.segments) > len(r.segments):
            r = r.with_(segments=theirs.segments)
        by_id[r.id] = r
    return sorted(by_id.values(), key=lambda r: r.created_at, reverse=True)


# ----------------------------------------------------------------------------- lost submissions

#: Why a strategy has no job after a submission the connection dropped in the middle of.
LOST_SUBMISSION = ("the SSH connection dropped while this strategy was being submitted and no job "
                   "of it was found afterwards; not resubmitted")


async def recover_submission(cluster: "Cluster", group_id: str, submissions: Sequence["JobSubmission"], *,
                             settle: float = 2.0, timeout: float = 60.0,
                             retry_every: float = 1.0) -> "list[SubmitResult] | None":
    """What a group's sbatch batch really submitted, when the connection dropped during it.

    Why: sbatch is not idempotent, so the batch is never re-sent; instead, once the connection
    is back, the group's jobs are found by the ``rvgroup:<id>`` comment every sibling carries and
    matched to their submissions (same partition, nodes, GPUs and time limit; else in submission
    order, which is job id order).  The others get :data:`LOST_SUBMISSION`.  None when no job of
    the group exists (then nothing was submitted and the caller may say so)."""
    import asyncio

    from rv_tui.cluster.base import SubmitResult

    await asyncio.sleep(settle)  # an sbatch still in flight when the channel closed lands first
    deadline = time.monotonic() + timeout
    while True:
        try:
            infos = await cluster.jobs()
            break
        except Exception:  # noqa: BLE001 - reconnecting: ask again until the deadline
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(retry_every)
    comment = f"rvgroup:{group_id}"

    def num(jid: str) -> int:
        head = jid.split("_")[0]
        return int(head) if head.isdigit() else 0

    mine = sorted((j for j in infos if (j.comment or "").strip() == comment), key=lambda j: num(j.job_id))
    # a winner that already finished is no longer listed: its claim names it
    owner = None
    try:
        res = await cluster.exec(f"cat {q(RemotePaths(cluster.scratch).group_dir(group_id) + '/claim/owner')}"
                                 " 2>/dev/null; exit 0", timeout=30)
        owner = next((t for t in res.stdout.split() if _JOB_ID.fullmatch(t)), None)
    except Exception:  # noqa: BLE001 - no claim readable: the listing is all we know
        owner = None
    if owner is not None and owner not in {j.job_id for j in mine}:
        from rv_tui.cluster.base import JobInfo

        mine.append(JobInfo(owner, "", cluster.user, "UNKNOWN", "", num_nodes=0))
    if not mine:
        return None
    assigned: dict[int, str] = {}

    def gpus(gres: str) -> int | None:
        tail = gres.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None

    for strict in (True, False):
        for info in mine:
            if info.job_id in assigned.values():
                continue
            for i, sub in enumerate(submissions):
                if i in assigned:
                    continue
                same = (info.partition == sub.partition and info.num_nodes == sub.nodes
                        and gpus(info.gres) in (None, sub.gpus_per_node)
                        and info.time_limit_s in (None, sub.walltime_s))
                if same or not strict:
                    assigned[i] = info.job_id
                    break
    return [SubmitResult(sub, assigned.get(i), None if i in assigned else LOST_SUBMISSION)
            for i, sub in enumerate(submissions)]


# ----------------------------------------------------------------------------- checkpoint chains

_JOB_ID = re.compile(r"[0-9]+(?:_[0-9]+)?")  # ASCII only, as Slurm and the shell see ids


def group_segments_path(scratch: str, group_id: str) -> str:
    return f"{RemotePaths(scratch).group_dir(group_id)}/segments"


def parse_segments(text: str) -> tuple[str, ...]:
    """``<group_dir>/segments`` (one job id per line, appended by the jobs) -> ids in order,
    each once; anything that is not a job id is ignored."""
    out: list[str] = []
    for line in text.splitlines():
        tok = line.strip()
        if _JOB_ID.fullmatch(tok) and tok not in out:
            out.append(tok)
    return tuple(out)


def group_of(info: "JobInfo | None") -> str | None:
    """The race group a job belongs to, from the ``--comment=rvgroup:<id>`` it carries."""
    comment = (info.comment or "") if info is not None else ""
    if not comment.startswith("rvgroup:"):
        return None
    gid = comment[len("rvgroup:"):].strip()
    return gid if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", gid) else None


async def read_segments(cluster: "Cluster", group_id: str) -> tuple[str, ...]:
    """The group's chain as the cluster knows it (empty when there is none or it is unreadable)."""
    path = group_segments_path(cluster.scratch, group_id)
    try:
        data = await cluster.read_file(path)
    except Exception:  # noqa: BLE001 - no chain (no file yet) or unreadable: nothing to follow
        return ()
    return parse_segments(data.decode(errors="replace"))


async def next_segment(cluster: "Cluster", job_id: str, info: "JobInfo | None") -> str | None:
    """The checkpoint segment that continues ``job_id``'s chain, if it resubmitted one.

    The group comes from the job's Slurm comment, else from the local store (Slurm may have
    forgotten a finished job)."""
    gid = group_of(info)
    if gid is None:
        try:
            rec = GroupStore().find_job(job_id)
        except Exception:  # noqa: BLE001 - no local records: no chain known
            rec = None
        gid = rec.id if rec is not None else None
    if gid is None:
        return None
    chain = await read_segments(cluster, gid)
    if job_id in chain:
        i = chain.index(job_id)
        return chain[i + 1] if i + 1 < len(chain) else None
    return None


__all__ = [
    "GitInfo", "GroupJob", "GroupRecord", "GroupStore", "ensure_group_dir", "fetch_remote_records",
    "git_info", "group_jobs_path", "group_json_path", "group_of", "group_segments_path",
    "merge_records", "new_group_id", "next_segment", "parse_segments", "publish_jobs",
    "publish_record", "read_segments", "recover_submission", "utc_now_iso",
]
