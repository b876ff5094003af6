"""What Slurm tells rv, as frozen dataclasses: nodes, queues, jobs, history, probes, submissions.

Why this module sits in ``slurm/``: the parsers and builders here produce and consume these types,
and the :class:`~rv_tui.cluster.base.Cluster` interface one floor up hands them to everyone else
(``rv_tui.cluster.base`` re-exports every name).  Keeping them on the lowest floor that needs them
means ``slurm/`` never imports ``cluster/``.

All times are timezone-aware datetimes in the *cluster's* zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rv_tui.errors import RvError

__all__ = [
    "ClusterSnapshot",
    "ControllerUnavailable",
    "ExecResult",
    "FileLine",
    "GpuAvailability",
    "History",
    "JobInfo",
    "JobSubmission",
    "NodeState",
    "PartitionQueue",
    "ProbeResult",
    "ProbeSpec",
    "STARTED_STATES",
    "SubmitResult",
    "TERMINAL_STATES",
]

#: Slurm job states after which a job will never run again.
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT",
})
#: States in which the job holds its allocation and runs (or is about to run) its script.
STARTED_STATES = frozenset({
    "RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT",
})


class ControllerUnavailable(RvError):
    """Slurm did not answer a job query (slurmctld restarting, busy or unreachable).

    Why a type of its own: it means "state unknown, ask again", never "the job is gone"; only
    Slurm's "Invalid job id" means a job is unknown.  Pollers (follow, the race) keep polling."""


@dataclass(frozen=True)
class NodeState:
    """One compute node as sinfo/scontrol report it (each node appears once)."""

    name: str
    partitions: tuple[str, ...]
    state: str  # lower-case Slurm state without flags: idle, mixed, allocated, drained, down, ...
    gpu_type: str | None  # canonical rv GPU type (rv_tui.gpus), None for CPU nodes
    gpus_total: int
    gpus_used: int
    cpus_total: int = 0
    cpus_alloc: int = 0
    memory_mb: int = 0
    memory_alloc_mb: int = 0
    features: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """False for nodes that cannot take new work (down, drained, draining, ...)."""
        return not any(s in self.state for s in ("down", "drain", "fail", "maint", "inval"))

    @property
    def gpus_free(self) -> int:
        return max(0, self.gpus_total - self.gpus_used) if self.usable else 0


@dataclass(frozen=True)
class PartitionQueue:
    """Queue depth of one partition: what competes with a new job there."""

    partition: str
    running_jobs: int = 0
    pending_jobs: int = 0
    pending_gpus: int = 0


@dataclass(frozen=True)
class GpuAvailability:
    """Free/total GPUs of one type in one partition (nodes counted once per partition)."""

    gpu_type: str
    partition: str
    gpus_total: int
    gpus_free: int
    nodes_total: int
    nodes_with_free: int
    max_free_on_one_node: int


@dataclass(frozen=True)
class ClusterSnapshot:
    """What the cluster looks like at one instant (one round trip: sinfo + squeue + date)."""

    taken_at: datetime
    nodes: tuple[NodeState, ...]
    queues: dict[str, PartitionQueue] = field(default_factory=dict)

    def availability(self) -> list[GpuAvailability]:
        """Free/total GPUs per (type, partition); each node counted once per partition."""
        acc: dict[tuple[str, str], list[NodeState]] = {}
        for node in self.nodes:
            if not node.gpu_type:
                continue
            for part in node.partitions:
                acc.setdefault((node.gpu_type, part), []).append(node)
        out = []
        for (gtype, part), nodes in sorted(acc.items()):
            out.append(GpuAvailability(
                gpu_type=gtype, partition=part,
                gpus_total=sum(n.gpus_total for n in nodes),
                gpus_free=sum(n.gpus_free for n in nodes),
                nodes_total=len(nodes),
                nodes_with_free=sum(1 for n in nodes if n.gpus_free > 0),
                max_free_on_one_node=max((n.gpus_free for n in nodes), default=0),
            ))
        return out

    def free_by_type(self) -> dict[str, tuple[int, int]]:
        """(free, total) GPUs per type across the cluster, each node counted once."""
        out: dict[str, list[int]] = {}
        for node in self.nodes:
            if node.gpu_type:
                cur = out.setdefault(node.gpu_type, [0, 0])
                cur[0] += node.gpus_free
                cur[1] += node.gpus_total
        return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass(frozen=True)
class ProbeSpec:
    """The shape of one ``sbatch --test-only`` probe; mirrors what would really be submitted."""

    partition: str
    gres: str  # per node, e.g. "gpu:a6000:4"
    walltime_s: int
    nodes: int = 1
    cpus_per_task: int | None = None
    mem: str | None = None  # per node, e.g. "187G"
    constraint: str | None = None
    account: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """Answer to a probe: when Slurm would start it (cluster time), or why it can't."""

    spec: ProbeSpec
    start: datetime | None
    error: str | None = None
    nodes: str | None = None


@dataclass(frozen=True)
class JobSubmission:
    """One job to submit.

    ``script`` is the complete sbatch script (what a real cluster runs).  The structured fields
    repeat what the script says so that a simulated cluster can play the job without a shell and
    so a request store can describe it; they must agree with the script.
    """

    script: str
    name: str
    partition: str
    nodes: int
    gpus_per_node: int
    gpu_type: str
    walltime_s: int
    time_min_s: int | None = None
    command: str | None = None  # None: an interactive allocation (rv up)
    group_id: str | None = None  # the race group; jobs of one group claim it on start
    stdout_path: str | None = None  # sbatch-level stdout (%x-%j expanded by the cluster)
    stderr_path: str | None = None
    checkpoint_total_s: int | None = None  # set for checkpoint-restart jobs
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmitResult:
    submission: JobSubmission
    job_id: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.job_id is not None


@dataclass(frozen=True)
class JobInfo:
    """A job as squeue (or scontrol, for recently finished jobs) reports it."""

    job_id: str
    name: str
    user: str
    state: str  # Slurm base state in upper case: PENDING, RUNNING, COMPLETED, CANCELLED, ...
    partition: str
    reason: str | None = None  # pending reason as Slurm says it (e.g. "Resources", "Priority")
    nodes: tuple[str, ...] = ()
    num_nodes: int = 1
    gres: str = ""  # e.g. "gpu:a6000:4" per node
    elapsed_s: int = 0
    time_limit_s: int | None = None
    start_time: datetime | None = None  # actual, or Slurm's estimate while pending
    submit_time: datetime | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    comment: str | None = None
    restart_count: int = 0  # times Slurm requeued/restarted it (scontrol Restarts=, squeue RestartCnt)
    work_dir: str | None = None  # the job's working directory (sacct WorkDir)
    from_accounting: bool = False  # True: from sacct, the job has left the queue (final record)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def has_started(self) -> bool:
        return self.state in STARTED_STATES


@dataclass(frozen=True)
class History:
    """What the accounting database (sacct) says about jobs that may have left the queue: one
    :class:`JobInfo` per id it knows (final state, exit code, requeue count, work dir; marked
    ``from_accounting``), or ``available=False`` with a note saying why history is limited."""

    available: bool
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class FileLine:
    """One line read from a remote file by :meth:`Cluster.stream_files`."""

    path: str
    line: str  # without the trailing newline; may contain "\r" (progress bars)


@dataclass(frozen=True)
class ExecResult:
    """Result of a plain login-node command (``rv exec``)."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0
