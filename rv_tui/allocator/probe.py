"""Probing: which (GPU type, partition, topology) can start when, asked of Slurm itself.

Availability comes from the snapshot (exact GRES/GRES_USED per node, nodes counted once).  Windows
come from ``sbatch --test-only`` with the real request shape (nodes, GPUs per node, CPUs, memory,
constraint, account) at a ladder of walltimes, then a refinement between the longest walltime that
starts now and the shortest that does not ("the cliff").  Each round is one
:meth:`Cluster.test_only` call, so a whole probe is at most two round trips after the snapshot.

``--test-only`` is not the backfill scheduler: on Slurm 22.05 it places a probe behind every
pending job even when the probe's resources are free now and the job would end before any of
them is planned to start (observed on the local cluster: a 20-minute 4-GPU probe answered "in 3 h"
while the same job, submitted, started at once).  So when a shape fits the free resources now but
the probe says "later" and other jobs are pending on those nodes, the window is read from the
queue instead: the earliest start the backfill scheduler has planned for a pending job that could
use those nodes (``squeue`` start estimates, fetched alongside round 2), less a margin.  Such
walltimes are listed in ``Window.from_queue``.

Partitions that reach exactly the same nodes of a type (the shared ``gpu`` partition on a small
cluster) are probed once; the duplicates are listed on the window instead of doubling the probes.

Per-user GPU limits: Slurm keeps a job pending forever (``QOSMaxGRESPerUser``) when the user's
running and pending GPUs of that type plus the new job exceed the QOS limit, and a race would
wait on it.  The user's jobs and the limits the cluster states (its partitions' QOS, read with
``sacctmgr``; rv's GPU table when the cluster states none) are fetched concurrently with round 1,
so they cost no extra round trip, and such types are excluded with the reason
("you already use 4 of 4 H200 GPUs").
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rv_tui.allocator.model import Request
from rv_tui.allocator.strategies import (
    INSTANT_S, MIN_WINDOW_S, Shape, Window, cpus_for, default_mem, mem_to_mb, shapes_for,
    static_exclusion,
)
from rv_tui.cluster.base import Cluster, ClusterSnapshot, JobInfo, NodeState, ProbeSpec
from rv_tui.durations import format_slurm
from rv_tui.gpus import GPU_SPECS
from rv_tui.slurm.accounting import HELD_STATES, QUEUED_STATES, ClusterLimits, gpu_use_by_type

#: Round-1 walltimes (s): 30m, 1h, 2h, 2:59 (the backfill cliff on Rivanna), 4h, 6h, 12h, 1d, 2d, 3d.
LADDER_S: tuple[int, ...] = (1800, 3600, 7200, 10740, 14400, 21600, 43200, 86400, 172800, 259200)
#: Round-2 points between the cliff's ends.
REFINE_POINTS = 3
#: A queue-derived window ends this long before the earliest planned start it must not delay.
QUEUE_MARGIN_S = 120
#: Queue-derived windows shorter than this are not recorded.
QUEUE_MIN_WINDOW_S = 600
_GRES_TYPE = re.compile(r"gpu[:/]([A-Za-z][\w.-]*)[:=]\d")


@dataclass(frozen=True)
class ProbeTarget:
    gpu_type: str
    partition: str
    shape: Shape
    sharing: tuple[str, ...] = ()  # other partitions with exactly these nodes

    def key(self) -> tuple[str, str, Shape]:
        return (self.gpu_type, self.partition, self.shape)


@dataclass
class ProbeStats:
    probes: int = 0
    round_trips: int = 0  # sequential rounds of latency (a queue read beside round 2 adds none)
    seconds: float = 0.0
    queue_reads: int = 0  # squeue reads for queue-derived windows

    def to_json(self) -> dict:
        return {"probes": self.probes, "round_trips": self.round_trips,
                "seconds": round(self.seconds, 3), "queue_reads": self.queue_reads}


@dataclass
class ProbeOutcome:
    windows: list[Window]
    excluded: dict[str, str] = field(default_factory=dict)
    stats: ProbeStats = field(default_factory=ProbeStats)
    gpu_use: dict[str, tuple[int, int]] = field(default_factory=dict)  # GRES type -> (held, queued)
    limits: ClusterLimits | None = None  # what the cluster states (None: rv's GPU table)


async def user_gpu_state(cluster: Cluster) -> tuple[dict[str, tuple[int, int]], ClusterLimits | None]:
    """The user's (running, pending) GPUs by GRES type and the cluster's stated limits (the
    ``gpu_limits`` capability; clusters without it, or without accounting, give None).
    Never raises: without an answer the limits are simply not checked against usage."""
    async def limits() -> ClusterLimits | None:
        fetch = getattr(cluster, "gpu_limits", None)
        if fetch is None:
            return None
        try:
            return await fetch()
        except Exception:
            return None

    try:
        jobs, lim = await asyncio.gather(cluster.jobs(), limits())
    except Exception:
        return {}, None
    held = gpu_use_by_type(jobs, cluster.user, HELD_STATES)
    queued = gpu_use_by_type(jobs, cluster.user, QUEUED_STATES)
    return {t: (held.get(t, 0), queued.get(t, 0)) for t in {*held, *queued}}, lim


def limit_exclusion(request: Request, gpu_type: str, use: dict[str, tuple[int, int]],
                    limits: ClusterLimits | None) -> str | None:
    """Why *gpu_type* would wait on the user's per-user limit (their running GPUs of the type,
    then their queued ones, come first) or never start (the cluster's per-job limit), or None."""
    spec = GPU_SPECS[gpu_type]
    part = request.partition or spec.partition
    stated = limits.user_limit(part, spec.gres_type) if limits else None
    limit = stated if stated is not None else spec.max_per_user
    held, queued = use.get(spec.gres_type, (0, 0))
    src = "the cluster's per-user limit" if stated is not None else "Rivanna's per-user limit"
    if (held or queued) and held + queued + request.gpus > limit:
        more = f" (+{queued} queued)" if queued else ""
        return (f"you already use {held} of {limit} {spec.label} GPUs{more} ({src}); "
                f"{request.gpus} more would wait in the queue (QOSMaxGRESPerUser) until yours end")
    per_job = limits.job_limit(part, spec.gres_type) if limits else None
    if per_job is not None and request.gpus > per_job:
        return f"the cluster allows at most {per_job} {spec.label} GPUs per job (requested {request.gpus})"
    return None


def candidate_types(request: Request) -> list[str]:
    return [request.gpu_type] if request.gpu_type else list(GPU_SPECS)


def plan_targets(request: Request, snapshot: ClusterSnapshot
                 ) -> tuple[list[ProbeTarget], dict[str, str]]:
    """The (type, partition, shape) combinations worth probing, and why other types are out."""
    targets: list[ProbeTarget] = []
    excluded: dict[str, str] = {}
    for gtype in candidate_types(request):
        spec = GPU_SPECS[gtype]
        reason = static_exclusion(request, spec)
        if reason:
            excluded[gtype] = reason
            continue
        nodes = [n for n in snapshot.nodes if n.gpu_type == gtype]
        if not nodes:
            excluded[gtype] = f"no {gtype} nodes on this cluster"
            continue
        usable = [n for n in nodes if n.usable]
        if not usable:
            states = sorted({n.state for n in nodes})
            excluded[gtype] = f"all {len(nodes)} {gtype} nodes are unavailable ({', '.join(states)})"
            continue
        groups = _partition_groups(usable, spec.partition)
        if request.partition:
            groups = [(p, share) for p, share in groups if p == request.partition
                      or request.partition in share]
            groups = [(request.partition, tuple(x for x in (p, *share) if x != request.partition))
                      for p, share in groups]
            if not groups:
                excluded[gtype] = f"partition {request.partition} has no usable {gtype} nodes"
                continue
        made = False
        for part, share in groups:
            members = [n for n in usable if part in n.partitions]
            biggest = max(n.gpus_total for n in members)
            for shape in shapes_for(request, spec):
                if shape.nodes <= len(members) and shape.gpus_per_node <= biggest:
                    targets.append(ProbeTarget(gtype, part, shape, share))
                    made = True
        if not made:
            excluded[gtype] = (f"no topology of {request.gpus} GPUs fits the "
                               f"{len(usable)} usable {gtype} node(s)")
    return targets, excluded


def _partition_groups(nodes: Sequence[NodeState], preferred: str) -> list[tuple[str, tuple[str, ...]]]:
    """Partitions grouped by the exact node set they reach; the dedicated partition represents."""
    by_part: dict[str, frozenset[str]] = {}
    for n in nodes:
        for p in n.partitions:
            by_part.setdefault(p, frozenset())
            by_part[p] = by_part[p] | {n.name}
    groups: dict[frozenset[str], list[str]] = {}
    for p, members in by_part.items():
        groups.setdefault(members, []).append(p)
    out = []
    for parts in groups.values():
        parts.sort(key=lambda p: (p != preferred, p))
        out.append((parts[0], tuple(parts[1:])))
    out.sort(key=lambda g: (g[0] != preferred, g[0]))
    return out


def ladder(request: Request, gpu_type: str) -> list[int]:
    """Round-1 walltimes: the request's total, the ladder below it, and the type maximum when the
    request is longer than it (checkpoint segments)."""
    spec = GPU_SPECS[gpu_type]
    total = request.time_s
    if gpu_type in ("mig", "rtx3090"):
        return [total]
    points = {w for w in LADDER_S if w < total and w <= spec.max_walltime_s}
    points.add(min(total, spec.max_walltime_s))
    return sorted(points)


def refine(window: Window, request: Request) -> list[int]:
    """Round-2 walltimes between the longest instant walltime and the next refused/late one."""
    lo = window.window_s
    later = [w for w, wait in window.waits.items() if w > lo and (wait is None or wait > INSTANT_S)]
    if lo == 0 or not later or lo >= request.time_s:
        return []
    hi = min(later)
    step = (hi - lo) / (REFINE_POINTS + 1)
    pts = {int(lo + step * i) // 300 * 300 for i in range(1, REFINE_POINTS + 1)}
    return sorted(p for p in pts if lo < p < hi and p >= MIN_WINDOW_S and p not in window.waits)


def probe_spec(request: Request, target: ProbeTarget, walltime_s: int) -> ProbeSpec:
    spec = GPU_SPECS[target.gpu_type]
    return ProbeSpec(
        partition=target.partition, gres=spec.gres(target.shape.gpus_per_node),
        walltime_s=walltime_s, nodes=target.shape.nodes,
        cpus_per_task=cpus_for(request, spec, target.shape.gpus_per_node),
        mem=request.mem or default_mem(spec, target.shape.gpus_per_node),
        constraint=spec.constraint, account=request.account,
    )


async def probe(cluster: Cluster, request: Request, snapshot: ClusterSnapshot) -> ProbeOutcome:
    """Measure windows for every target: round 1 (ladder) and round 2 (cliff refinement)."""
    t0 = time.monotonic()
    targets, excluded = plan_targets(request, snapshot)
    stats = ProbeStats()
    waits: dict[tuple, dict[int, float | None]] = {t.key(): {} for t in targets}
    errors: dict[tuple, dict[int, str]] = {t.key(): {} for t in targets}

    async def run_round(jobs: list[tuple[ProbeTarget, int]]) -> None:
        if not jobs:
            return
        results = await cluster.test_only([probe_spec(request, t, w) for t, w in jobs])
        stats.round_trips += 1
        stats.probes += len(jobs)
        now = snapshot.taken_at + timedelta(seconds=time.monotonic() - t0)
        for (t, w), res in zip(jobs, results):
            if res.start is None:
                waits[t.key()][w] = None
                errors[t.key()][w] = res.error or "refused"
            else:
                waits[t.key()][w] = _seconds_until(res.start, now)

    _, (use, limits) = await asyncio.gather(
        run_round([(t, w) for t in targets for w in ladder(request, t.gpu_type)]),
        user_gpu_state(cluster))
    for gtype in dict.fromkeys(t.gpu_type for t in targets):
        why = limit_exclusion(request, gtype, use, limits)
        if why:
            excluded[gtype] = why
    targets = [t for t in targets if t.gpu_type not in excluded]
    windows = [_window(t, waits, errors) for t in targets]
    round2 = [(t, w) for t, win in zip(targets, windows) for w in refine(win, request)]
    suspects = [t for t, win in zip(targets, windows) if _queue_suspect(request, t, win, snapshot)]
    jobs: list[JobInfo] = []
    if round2 or suspects:
        reads = [run_round(round2)]
        if suspects:
            reads.append(cluster.jobs(all_users=True))
        got = await asyncio.gather(*reads)
        if suspects:
            jobs = got[1]
            stats.queue_reads += 1
            if not round2:
                stats.round_trips += 1
    from_queue: dict[tuple, tuple[int, ...]] = {}
    if suspects:
        now = snapshot.taken_at + timedelta(seconds=time.monotonic() - t0)
        for t in suspects:
            from_queue[t.key()] = _apply_queue_window(request, t, waits[t.key()],
                                                      queue_horizon(t, snapshot, jobs, now))
    windows = [_window(t, waits, errors, from_queue.get(t.key(), ())) for t in targets]
    stats.seconds = time.monotonic() - t0
    return ProbeOutcome(windows=windows, excluded=excluded, stats=stats, gpu_use=use, limits=limits)


def _window(t: ProbeTarget, waits: dict, errors: dict, from_queue: tuple[int, ...] = ()) -> Window:
    return Window(t.gpu_type, t.partition, t.shape, dict(waits[t.key()]), dict(errors[t.key()]),
                  t.sharing, from_queue)


def _target_nodes(t: ProbeTarget, snapshot: ClusterSnapshot) -> list[NodeState]:
    return [n for n in snapshot.nodes
            if n.gpu_type == t.gpu_type and n.usable and t.partition in n.partitions]


def fits_now(request: Request, t: ProbeTarget, snapshot: ClusterSnapshot) -> bool:
    """Whether the shape fits the free GPUs, CPUs and memory of the target's nodes right now."""
    spec = GPU_SPECS[t.gpu_type]
    g = t.shape.gpus_per_node
    cpus = cpus_for(request, spec, g)
    mem_mb = mem_to_mb(request.mem or default_mem(spec, g))
    room = [n for n in _target_nodes(t, snapshot) if n.gpus_free >= g
            and (not n.cpus_total or n.cpus_total - n.cpus_alloc >= cpus)
            and (not n.memory_mb or n.memory_mb - n.memory_alloc_mb >= mem_mb)]
    return len(room) >= t.shape.nodes


def _queue_suspect(request: Request, t: ProbeTarget, win: Window,
                   snapshot: ClusterSnapshot) -> bool:
    """--test-only said "later" although the shape fits now and jobs are pending there."""
    if t.gpu_type in ("mig", "rtx3090"):
        return False
    top = min(request.time_s, GPU_SPECS[t.gpu_type].max_walltime_s)
    if win.window_s >= top or not fits_now(request, t, snapshot):
        return False
    parts = {p for n in _target_nodes(t, snapshot) for p in n.partitions}
    return any(q.pending_jobs for p, q in snapshot.queues.items() if p in parts)


def queue_horizon(t: ProbeTarget, snapshot: ClusterSnapshot, jobs: Sequence[JobInfo],
                  now: datetime) -> float | None:
    """Seconds until the earliest planned start of a pending job that may use the target's nodes
    (a partition in common, and no GPU type or the same one); None when none is planned.

    Backfill starts a lower-priority job now only if it ends before that start, so this is the
    window the real scheduler would grant (pending jobs without an estimate are not protected by
    backfill either)."""
    parts = {p for n in _target_nodes(t, snapshot) for p in n.partitions}
    gres_type = GPU_SPECS[t.gpu_type].gres_type
    starts = []
    for j in jobs:
        if j.state != "PENDING" or j.start_time is None:
            continue
        if not parts & {p.strip() for p in j.partition.split(",")}:
            continue
        m = _GRES_TYPE.search(j.gres or "")
        if m and m.group(1) != gres_type:
            continue
        starts.append((j.start_time - now).total_seconds())
    return min(starts) if starts else None


def _apply_queue_window(request: Request, t: ProbeTarget, waits: dict[int, float | None],
                        horizon: float | None) -> tuple[int, ...]:
    """Mark walltimes up to the queue horizon as "starts now"; returns the walltimes changed."""
    if horizon is None:
        return ()
    top = min(request.time_s, GPU_SPECS[t.gpu_type].max_walltime_s)
    h = min(int(horizon - QUEUE_MARGIN_S) // 300 * 300, top)
    current = max((w for w, v in waits.items() if v is not None and v <= INSTANT_S), default=0)
    if h < QUEUE_MIN_WINDOW_S or h <= current:
        return ()
    changed = [w for w, v in waits.items() if w <= h and v is not None and v > INSTANT_S]
    if h not in waits or waits[h] is not None:
        changed.append(h)
    for w in changed:
        waits[w] = 0.0
    return tuple(sorted(set(changed)))


def _seconds_until(start: datetime, now: datetime) -> float:
    return max(0.0, (start - now).total_seconds())


def describe_window(w: Window) -> str:
    """``a6000 1x4 on gpu-a6000: window 2h (starts now up to 2:00:00)``."""
    head = f"{w.gpu_type} {w.shape.label} on {w.partition}"
    if not any(v is not None for v in w.waits.values()):
        err = next(iter(w.errors.values()), "refused")
        return f"{head}: refused ({err})"
    if w.window_s == 0:
        return f"{head}: no window now"
    src = (" (from the queue's planned starts; --test-only ignores backfill here)"
           if w.window_s in w.from_queue else "")
    return f"{head}: window {format_slurm(w.window_s)}{src}"
