"""Probing: which (GPU type, partition, topology) can start when, asked of Slurm itself.

Availability comes from the snapshot (exact GRES/GRES_USED per node, nodes counted once).  Windows
come from ``sbatch --test-only`` with the real request shape (nodes, GPUs per node, CPUs, memory,
constraint, account) at a ladder of walltimes, then a refinement between the longest walltime that
starts now and the shortest that does not ("the cliff").  Each round is one
:meth:`Cluster.test_only` call, so a whole probe is at most two round trips after the snapshot.

Partitions that reach exactly the same nodes of a type (the shared ``gpu`` partition on a small
cluster) are probed once; the duplicates are listed on the window instead of doubling the probes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rv_tui.allocator.model import Request
from rv_tui.allocator.strategies import (
    INSTANT_S, MIN_WINDOW_S, Shape, Window, cpus_for, default_mem, shapes_for, static_exclusion,
)
from rv_tui.cluster.base import Cluster, ClusterSnapshot, NodeState, ProbeSpec
from rv_tui.durations import format_slurm
from rv_tui.gpus import GPU_SPECS

#: Round-1 walltimes (s): 30m, 1h, 2h, 2:59 (the backfill cliff on Rivanna), 4h, 6h, 12h, 1d, 2d, 3d.
LADDER_S: tuple[int, ...] = (1800, 3600, 7200, 10740, 14400, 21600, 43200, 86400, 172800, 259200)
#: Round-2 points between the cliff's ends.
REFINE_POINTS = 3


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
    round_trips: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"probes": self.probes, "round_trips": self.round_trips,
                "seconds": round(self.seconds, 3)}


@dataclass
class ProbeOutcome:
    windows: list[Window]
    excluded: dict[str, str] = field(default_factory=dict)
    stats: ProbeStats = field(default_factory=ProbeStats)


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

    await run_round([(t, w) for t in targets for w in ladder(request, t.gpu_type)])
    windows = [_window(t, waits, errors) for t in targets]
    round2 = [(t, w) for t, win in zip(targets, windows) for w in refine(win, request)]
    if round2:
        await run_round(round2)
        windows = [_window(t, waits, errors) for t in targets]
    stats.seconds = time.monotonic() - t0
    return ProbeOutcome(windows=windows, excluded=excluded, stats=stats)


def _window(t: ProbeTarget, waits: dict, errors: dict) -> Window:
    return Window(t.gpu_type, t.partition, t.shape, dict(waits[t.key()]), dict(errors[t.key()]),
                  t.sharing)


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
    return f"{head}: window {format_slurm(w.window_s)}"
