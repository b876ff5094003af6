"""Find a job's log files: one stdout/stderr pair, or one pair per node for multi-node jobs.

Paths come from the job's name and id (``RemotePaths.log_file``, the layout every job template
writes); per-node files are detected from the job's node count and by listing the logs directory,
so jobs that have already left squeue are found too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rv_tui.cluster.base import Cluster, JobInfo
from rv_tui.errors import RvError
from rv_tui.logs.events import LogSource, Stream
from rv_tui.paths import RemotePaths
from rv_tui.quoting import q

_JOB_ID_RE = re.compile(r"^\d+(_\d+)?(\+\d+)?$")


def check_job_id(job_id: str) -> str:
    if not _JOB_ID_RE.match(job_id):
        raise RvError(f"not a Slurm job id: {job_id!r}", hint="job ids look like 12345 (see `rv ps`)")
    return job_id


@dataclass(frozen=True)
class JobLogs:
    """Every log file of one job: ``nodes`` per-node pairs (0 for a single-node job) + batch pair."""

    job_id: str
    name: str
    nodes: int
    batch: tuple[LogSource, ...]
    per_node: tuple[LogSource, ...] = ()
    found: frozenset[str] = field(default_factory=frozenset)  # basenames seen by the listing

    @property
    def multi_node(self) -> bool:
        return self.nodes > 0

    @property
    def all(self) -> list[LogSource]:
        return [*self.per_node, *self.batch]

    def select(self, *, node: int | None = None, streams: Sequence[Stream] = ("out", "err")) -> list[LogSource]:
        """The sources to show: one node's files (``node``) or all, of the given streams."""
        if node is not None:
            if not self.multi_node:
                if node == 0:
                    return [s for s in self.batch if s.stream in streams]
                raise RvError(f"job {self.job_id} is a single-node job; it has no node {node}",
                              hint="drop --node, or use --node 0")
            if node >= self.nodes:
                raise RvError(f"job {self.job_id} has {self.nodes} nodes (0..{self.nodes - 1}); no node {node}")
            return [s for s in self.per_node if s.node == node and s.stream in streams]
        return [s for s in self.all if s.stream in streams]


def listing_command(logs_dir: str, job_id: str) -> str:
    """List the basenames of every log file of ``job_id`` (quoted dir, glob only on our suffixes)."""
    jid = q(check_job_id(job_id))
    globs = " ".join(f"*-{jid}{suffix}" for suffix in (".out", ".err", ".node*.out", ".node*.err"))
    return (f"cd {q(logs_dir)} 2>/dev/null && for f in {globs}; do "
            f"[ -e \"$f\" ] && printf '%s\\n' \"$f\"; done; true")


_NODE_RE = re.compile(r"^(?P<name>.+)-(?P<id>[^-]+?)\.node(?P<n>\d+)\.(?P<s>out|err)$")
_PAIR_RE = re.compile(r"^(?P<name>.+)-(?P<id>[^-]+?)\.(?P<s>out|err)$")


async def list_log_files(cluster: Cluster, job_id: str) -> set[str]:
    """Basenames of the job's files in the logs dir (empty if listing is unsupported or fails)."""
    paths = RemotePaths(cluster.scratch)
    try:
        res = await cluster.exec(listing_command(paths.logs_dir, job_id), timeout=30)
    except Exception:
        return set()
    if not res.ok:
        return set()
    return {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}


async def locate_logs(cluster: Cluster, job_id: str, info: JobInfo | None = None, *,
                      name: str | None = None, nodes: int | None = None) -> JobLogs:
    """The job's log files.  ``info``/``name``/``nodes`` come from squeue or the request store;
    whatever they leave open is filled in from a listing of the logs directory."""
    check_job_id(job_id)
    found = await list_log_files(cluster, job_id)
    node_idx: set[int] = set()
    for base in found:
        m = _NODE_RE.match(base)
        if m and m.group("id") == job_id:
            node_idx.add(int(m.group("n")))
            name = name or (info.name if info else None) or m.group("name")
        else:
            m = _PAIR_RE.match(base)
            if m and m.group("id") == job_id:
                name = name or (info.name if info else None) or m.group("name")
    if name is None and info is not None:
        name = info.name
    if name is None:
        raise RvError(f"no log files found for job {job_id}",
                      hint="the job may be older than the cluster remembers; see `rv ps`")
    if nodes is None:
        nodes = info.num_nodes if info is not None else 1
    n_nodes = max(nodes if nodes > 1 else 0, max(node_idx) + 1 if node_idx else 0)
    paths = RemotePaths(cluster.scratch)
    batch_out = _usable(info.stdout_path if info else None) or paths.log_file(name, job_id, "out")
    batch_err = _usable(info.stderr_path if info else None) or paths.log_file(name, job_id, "err")
    if not found and info is not None and info.from_accounting and info.work_dir and not (
            _usable(info.stdout_path)):
        # not an rv log and sacct (22.05: no StdOut) gave no -o: Slurm's default file
        batch_out = batch_err = f"{info.work_dir.rstrip('/')}/slurm-{job_id}.out"
    batch = (LogSource(batch_out, None, "out"), LogSource(batch_err, None, "err"))
    if batch_out == batch_err:  # --output and --error to one file
        batch = (LogSource(batch_out, None, "out"),)
    per_node = tuple(LogSource(paths.log_file(name, job_id, s, node=n), n, s)
                     for n in range(n_nodes) for s in ("out", "err"))
    return JobLogs(job_id, name, n_nodes, batch, per_node, frozenset(found))


def _usable(path: str | None) -> str | None:
    """scontrol's StdOut, unless empty or still holding unexpanded %-patterns."""
    if not path or "%" in path or path in ("(null)", "/dev/null"):
        return None
    return path
