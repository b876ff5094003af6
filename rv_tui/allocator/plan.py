"""The allocator's entry points: a Request from flags + config, and a ranked plan from a Cluster.

``make_plan`` is what ``rv up``/``rv run`` (dry-run or not) and the TUI launch pane call:
snapshot (one round trip), probe (at most two), generate, rank, prune, cap.  All I/O goes through
the :class:`~rv_tui.cluster.base.Cluster` interface, so the demo cluster runs the same code.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from rv_tui.allocator.estimator import WaitEstimator
from rv_tui.allocator.model import Request, Strategy
from rv_tui.allocator.probe import ProbeStats, probe
from rv_tui.allocator.rank import Pruned, rank_and_prune
from rv_tui.allocator.strategies import Window, generate
from rv_tui.cluster.base import Cluster, ClusterSnapshot
from rv_tui.durations import parse_duration
from rv_tui.errors import RvError
from rv_tui.gpus import GPU_SPECS, resolve_gpu_type

DEFAULT_TIME = "2:59:00"
_MEM_RE = re.compile(r"^\d+[GgMm]?$")


class NoStrategyError(RvError):
    """No GPU type can satisfy the request; ``excluded`` says why for each type."""

    def __init__(self, request: Request, excluded: dict[str, str]) -> None:
        lines = [f"  {t}: {why}" for t, why in excluded.items()]
        what = f"{request.gpus} x {request.gpu_type or 'any GPU'}"
        super().__init__(
            f"no strategy can satisfy {what} for {_fmt(request.time_s)}:\n" + "\n".join(lines),
            hint="fewer GPUs, a shorter --time, another --type, or drop --single-node/--mem",
        )
        self.excluded = dict(excluded)


def _fmt(seconds: int) -> str:
    from rv_tui.durations import format_slurm

    return format_slurm(seconds)


@dataclass
class AllocationPlan:
    """Everything the allocator found: inputs, cluster state, windows, ranked strategies."""

    request: Request
    snapshot: ClusterSnapshot
    windows: list[Window]
    strategies: list[Strategy]
    pruned: list[Pruned] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    stats: ProbeStats = field(default_factory=ProbeStats)

    def to_json(self) -> dict[str, Any]:
        return {
            "request": request_json(self.request),
            "cluster_time": self.snapshot.taken_at.isoformat(),
            "availability": [a.__dict__ for a in self.snapshot.availability()],
            "queues": {p: q.__dict__ for p, q in self.snapshot.queues.items()},
            "windows": [w.to_json() for w in self.windows],
            "strategies": [strategy_json(s) for s in self.strategies],
            "pruned": [p.to_json() for p in self.pruned],
            "excluded": dict(self.excluded),
            "probe": self.stats.to_json(),
        }


def request_json(r: Request) -> dict[str, Any]:
    return {"gpus": r.gpus, "gpu_type": r.gpu_type, "time_s": r.time_s, "mem": r.mem,
            "single_node": r.single_node, "command": r.command, "name": r.name,
            "account": r.account, "partition": r.partition}


def strategy_json(s: Strategy) -> dict[str, Any]:
    return {
        "id": s.id, "label": s.label, "gpu_type": s.gpu_type, "partition": s.partition,
        "nodes": s.nodes, "gpus_per_node": s.gpus_per_node, "topology": s.topology,
        "kind": s.kind.value, "walltime_s": s.walltime_s, "time_min_s": s.time_min_s,
        "total_time_s": s.total_time_s, "est_wait_s": s.est_wait_s, "est_su": s.est_su,
        "mem": s.mem, "cpus_per_task": s.cpus_per_task, "constraint": s.constraint,
        "sbatch_options": list(s.sbatch_options), "notes": list(s.notes),
    }


async def make_plan(cluster: Cluster, request: Request, *, max_strategies: int = 16,
                    estimator: WaitEstimator | None = None) -> AllocationPlan:
    """Probe *cluster* and return ranked strategies; raise :class:`NoStrategyError` if none."""
    t0 = time.monotonic()
    snapshot = await cluster.snapshot()
    outcome = await probe(cluster, request, snapshot)
    est = estimator or WaitEstimator()
    est.snapshot = snapshot
    strategies = generate(request, outcome.windows, est.wait_of)
    excluded = dict(outcome.excluded)
    got = {s.gpu_type for s in strategies}
    for w in outcome.windows:
        if w.gpu_type not in got and w.gpu_type not in excluded:
            excluded[w.gpu_type] = _why_no_strategy(request, [x for x in outcome.windows
                                                              if x.gpu_type == w.gpu_type])
    ranked, pruned = rank_and_prune(strategies, max_strategies)
    stats = outcome.stats
    stats.round_trips += 1  # the snapshot
    stats.seconds = time.monotonic() - t0
    if not ranked:
        raise NoStrategyError(request, excluded or {"any": "no GPU nodes found on the cluster"})
    return AllocationPlan(request=request, snapshot=snapshot, windows=outcome.windows,
                          strategies=ranked, pruned=pruned, excluded=excluded, stats=stats)


def _why_no_strategy(request: Request, windows: list[Window]) -> str:
    errs = sorted({e for w in windows for e in w.errors.values()})
    if errs and not any(v is not None for w in windows for v in w.waits.values()):
        return "Slurm refused every probe: " + "; ".join(errs)
    if errs:
        return "Slurm refused the requested shape: " + "; ".join(errs)
    return "no window long enough for a strategy"


# --------------------------------------------------------------------------- request from flags


def parse_mem(value: str) -> str:
    """Validate ``--mem`` (``64G``, ``512M``, ``2000``); ``200GB`` gets a did-you-mean hint."""
    v = value.strip()
    if _MEM_RE.match(v):
        return v[:-1] + v[-1].upper() if v[-1].isalpha() else v
    m = re.match(r"^(\d+)\s*([GgMm])[Bb]?$", v)
    hint = f"did you mean {m.group(1)}{m.group(2).upper()}?" if m else \
        "use a number with G or M, e.g. 64G (memory per node)"
    raise RvError(f"--mem {value!r} is not a Slurm memory size", hint=hint)


def request_from_args(args: Any, config: Any = None) -> Request:
    """The Request for ``rv up``/``rv run``/the TUI form: flags first, then config defaults.

    Reads (all optional on *args*): gpu, type, time, mem, single_node, name, mig, account,
    partition, command_str.  Config ``defaults.gpu_type/time/account/partition`` fill the gaps;
    a configured default partition is dropped when an explicit ``--type`` is not served by it.
    """
    defaults = getattr(config, "defaults", None)
    a = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    gpus = a("gpu")
    gtype_raw = a("type")
    explicit_type = gtype_raw not in (None, "")
    if not explicit_type and defaults is not None:
        gtype_raw = defaults.gpu_type
    if a("mig"):
        # --mig means exactly one MIG slice: a conflicting -g/-t is refused, not silently dropped
        if gpus not in (None, 1):
            raise RvError(f"--mig is one MIG slice; it cannot be combined with -g {gpus}",
                          hint="drop -g for a free MIG slice, or drop --mig and pick a full GPU type with -t")
        if explicit_type and resolve_gpu_type(str(gtype_raw)) != "mig":
            raise RvError(f"--mig cannot be combined with -t {gtype_raw}",
                          hint="use either --mig (a free MIG slice) or -t TYPE")
        gtype_raw, gpus, explicit_type = "mig", 1, True
    gpus = 1 if gpus is None else int(gpus)
    if gpus < 1:
        raise RvError(f"--gpu must be at least 1 (got {gpus})")
    gpu_type = None if gtype_raw in (None, "", "any") else resolve_gpu_type(str(gtype_raw))
    if gpu_type and gpus > GPU_SPECS[gpu_type].max_per_user:
        spec = GPU_SPECS[gpu_type]
        raise RvError(f"{spec.name} allows at most {spec.max_per_user} GPUs per user (requested {gpus})",
                      hint="request fewer GPUs or another --type")
    time_raw = a("time") or (defaults.time if defaults is not None and defaults.time else DEFAULT_TIME)
    try:
        time_s = parse_duration(str(time_raw))
    except RvError as exc:
        raise RvError(f"--time: {exc.message}", hint=exc.hint) from None
    mem = parse_mem(a("mem")) if a("mem") else None
    account = a("account") or (defaults.account if defaults is not None else None)
    partition = a("partition") or None
    if partition is None and defaults is not None and defaults.partition:
        partition = defaults.partition
        if explicit_type and gpu_type and not _partition_serves(partition, gpu_type):
            partition = None
    return Request(gpus=gpus, gpu_type=gpu_type, time_s=time_s, mem=mem,
                   single_node=bool(a("single_node", False)), command=a("command_str"),
                   name=a("name"), account=account, partition=partition)


def _partition_serves(partition: str, gpu_type: str) -> bool:
    from rv_tui.gpus import SHARED_GPU_PARTITION, SHARED_PARTITION_TYPES

    if partition == GPU_SPECS[gpu_type].partition:
        return True
    return partition == SHARED_GPU_PARTITION and gpu_type in SHARED_PARTITION_TYPES
