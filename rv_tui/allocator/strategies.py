"""Strategy generation: every compatible way to satisfy a request, from probed windows.

Pure functions (no I/O): :mod:`rv_tui.allocator.probe` measures windows through the Cluster,
this module turns ``(request, windows)`` into :class:`~rv_tui.allocator.model.Strategy` objects,
and :mod:`rv_tui.allocator.rank` orders and prunes them.

Decisions worth knowing:

* Topologies use exact divisors only (``n = nodes x per_node``), so an odd count never
  over-allocates (original bug 11): 6 GPUs -> 1x6, 2x3, 3x2; 5 GPUs -> 1x5 only (or 5x1 when no
  node can hold more, which the label says).
* ``--time-min`` (kind TIMEMIN) is offered only when the window is shorter than the request, and
  its label says the job *may get only the window* (original bug 9).  For a batch command rv then
  treats the job like a checkpoint job (``total_time_s`` > walltime); for ``rv up`` it is an
  interactive session that may be shorter than asked.
* CHECKPOINT (fixed segments that fit the window, or the type's maximum walltime for requests
  longer than it) is offered only for batch commands: resubmitting an idle ``rv up`` shell is the
  original's bug 4.
* MIG and the interactive rtx3090 partition get one strategy each (MIG / INTERACTIVE) and only
  when the whole request fits their limits; they are never silently capped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rv_tui.allocator.model import Request, Strategy, StrategyKind
from rv_tui.durations import format_human, format_slurm
from rv_tui.gpus import GPU_SPECS, GpuSpec

#: A probe answer starting within this many seconds counts as "starts now".
INSTANT_S = 300
#: Checkpoint segments end this long before their walltime (timeout + SIGUSR1 + save).
CHECKPOINT_BUFFER_S = 600
#: Windows shorter than this are not worth a --time-min or checkpoint strategy.
MIN_WINDOW_S = 1800
#: Fixed memory for a MIG slice (original's MIG fix).
MIG_MEM = "16G"
#: Fraction of a node's memory left out of the default --mem (OS, Slurm's MemSpecLimit).
MEM_HEADROOM = 0.03
#: Smallest default --mem (GiB).
MIN_DEFAULT_MEM_GB = 16


@dataclass(frozen=True)
class Shape:
    """A topology: ``nodes`` x ``gpus_per_node``."""

    nodes: int
    gpus_per_node: int

    @property
    def label(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}"


@dataclass(frozen=True)
class Window:
    """What probing one (type, partition, shape) found.

    ``waits`` maps a probed walltime to seconds until Slurm would start it (None: refused).
    ``window_s`` is the longest walltime that starts now (0: none).
    """

    gpu_type: str
    partition: str
    shape: Shape
    waits: dict[int, float | None] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    partitions_sharing: tuple[str, ...] = ()  # other partitions over the same nodes (not probed)
    #: walltimes whose "starts now" comes from the queue's planned starts, not --test-only
    #: (see :func:`rv_tui.allocator.probe.queue_horizon`)
    from_queue: tuple[int, ...] = ()

    @property
    def window_s(self) -> int:
        ok = [w for w, wait in self.waits.items() if wait is not None and wait <= INSTANT_S]
        return max(ok, default=0)

    def wait_for(self, walltime_s: int) -> float | None:
        """Seconds until a job of *walltime_s* starts: the probe at that walltime, else the
        nearest probed walltime above it (a longer job never starts earlier)."""
        if walltime_s in self.waits:
            return self.waits[walltime_s]
        above = sorted(w for w in self.waits if w >= walltime_s and self.waits[w] is not None)
        if above:
            return self.waits[above[0]]
        if walltime_s <= self.window_s:
            return self.waits[self.window_s]
        return None

    def error_for(self, walltime_s: int) -> str | None:
        if walltime_s in self.errors:
            return self.errors[walltime_s]
        return next(iter(self.errors.values()), None) if not any(
            v is not None for v in self.waits.values()) else None

    def to_json(self) -> dict:
        return {
            "gpu_type": self.gpu_type, "partition": self.partition, "topology": self.shape.label,
            "window_s": self.window_s,
            "waits": {str(k): v for k, v in sorted(self.waits.items())},
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
            "partitions_sharing": list(self.partitions_sharing),
            "from_queue": list(self.from_queue),
        }


# --------------------------------------------------------------------------- static compatibility


def shapes_for(request: Request, spec: GpuSpec) -> list[Shape]:
    """Topologies for *request* on *spec*, single node first; exact divisors only."""
    n = request.gpus
    if spec.name in ("mig", "rtx3090"):
        return [Shape(1, n)] if n <= min(spec.max_per_job, spec.per_node) else []
    shapes: list[Shape] = []
    if n <= min(spec.max_per_job, spec.per_node):
        shapes.append(Shape(1, n))
    if request.single_node or n > spec.max_per_user or n > spec.max_per_job:
        return shapes  # max/job counts the whole job, all its nodes
    multi = [Shape(k, n // k) for k in range(2, n + 1) if n % k == 0 and n // k <= spec.per_node]
    roomy = [s for s in multi if s.gpus_per_node >= 2]
    if n >= 4 and roomy:
        shapes.extend(roomy[:2])
    elif not shapes and multi:
        shapes.append(multi[0])  # the count needs nodes: the fewest nodes that hold it exactly
    return shapes


def static_exclusion(request: Request, spec: GpuSpec) -> str | None:
    """Why *spec* can never serve *request* (independent of cluster state), or None."""
    n = request.gpus
    if spec.name == "mig" and n != 1:
        return f"MIG gives exactly 1 slice per job (requested {n} GPUs)"
    if spec.name == "rtx3090" and n > spec.max_per_job:
        return f"rtx3090 (interactive) allows at most {spec.max_per_job} GPUs per job"
    if n > spec.max_per_user:
        return f"{spec.name} allows at most {spec.max_per_user} GPUs per user (requested {n})"
    if n > spec.max_per_job and not request.single_node:  # (single-node: said below)
        return f"{spec.name} allows at most {spec.max_per_job} GPUs per job, over all its nodes (requested {n})"
    if spec.name in ("mig", "rtx3090") and request.time_s > spec.max_walltime_s:
        return (f"{spec.name} has a maximum walltime of {format_slurm(spec.max_walltime_s)} "
                f"(requested {format_slurm(request.time_s)})")
    if request.command is None and request.time_s > spec.max_walltime_s:
        return (f"{spec.name} has a maximum walltime of {format_slurm(spec.max_walltime_s)}; "
                "an interactive session cannot be split into checkpoint segments")
    if not shapes_for(request, spec):
        if request.single_node and n > min(spec.max_per_job, spec.per_node):
            return (f"--single-node but {spec.name} holds at most "
                    f"{min(spec.max_per_job, spec.per_node)} GPUs per job on one node")
        return f"{n} GPUs cannot be split evenly over {spec.name} nodes ({spec.per_node} per node)"
    mem_mb = mem_to_mb(request.mem) if request.mem else None
    if mem_mb and mem_mb > spec.node_memory_mb:
        return f"--mem {request.mem} exceeds {spec.name} node memory ({spec.node_memory_mb // 1024}G)"
    return None


# --------------------------------------------------------------------------- resources


def mem_to_mb(mem: str) -> int:
    """``64G``/``512M``/``1000`` (MB, Slurm's default unit) -> MB."""
    s = mem.strip().upper()
    if s.endswith("G"):
        return int(float(s[:-1]) * 1024)
    if s.endswith("M"):
        return int(float(s[:-1]))
    return int(float(s))


def default_mem(spec: GpuSpec, gpus_per_node: int) -> str:
    """Memory per node: the GPUs' proportional share of the node, never more.

    The original asked 1.5x the share (section 2.7), e.g. 732G for 4 of 8 A100-80 GPUs, which
    left the node's other GPUs unusable for anyone asking their own share and made probes report
    waits while GPUs were free.  The share is per GPU (whole GiB, floor) of the node's memory less
    :data:`MEM_HEADROOM` (what the OS keeps on real nodes), so k jobs of the default always pack
    and 8/8 GPUs fits the node; 16G floor."""
    if spec.name == "mig":
        return MIG_MEM
    per_gpu_gb = int(spec.node_memory_mb * (1 - MEM_HEADROOM)) // spec.per_node // 1024
    return f"{max(per_gpu_gb * gpus_per_node, MIN_DEFAULT_MEM_GB)}G"


def cpus_for(request: Request, spec: GpuSpec, gpus_per_node: int) -> int:
    """CPUs per task (one task per node): MIG 1, else 4 per GPU capped at 32 and the node."""
    if spec.name == "mig":
        return 1
    per_gpu = request.cpus_per_gpu or 4
    cap = 32 if not request.cpus_per_gpu else spec.cpus_per_node
    return max(1, min(gpus_per_node * per_gpu, cap, spec.cpus_per_node))


def su_cost(spec: GpuSpec, gpus: int, seconds: float) -> float:
    return round(spec.su_cost(gpus, seconds), 2)


def checkpoint_su(spec: GpuSpec, gpus: int, total_s: int, segment_s: int) -> float:
    """SUs for a checkpointed run: the useful time plus each segment's unused buffer."""
    useful = max(segment_s - CHECKPOINT_BUFFER_S, 60)
    segments = math.ceil(total_s / useful)
    return su_cost(spec, gpus, total_s + segments * CHECKPOINT_BUFFER_S)


def checkpoint_segment(window_s: int, spec: GpuSpec) -> int:
    """A segment length from a window (rounded down to 5 minutes, capped at the type maximum)."""
    seg = min(window_s, spec.max_walltime_s)
    return max(seg - seg % 300, 0)


# --------------------------------------------------------------------------- generation


def sbatch_options(spec: GpuSpec, partition: str, shape: Shape, walltime_s: int,
                   time_min_s: int | None, mem: str, cpus: int, account: str | None,
                   exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The exact #SBATCH options of a strategy (name, output and script are the template's)."""
    opts: list[str] = ["-p", partition, "-N", str(shape.nodes)]
    if shape.nodes > 1:
        opts.append("--ntasks-per-node=1")
    opts += [f"--gres={spec.gres(shape.gpus_per_node)}", "-t", format_slurm(walltime_s)]
    if time_min_s:
        opts.append(f"--time-min={format_slurm(time_min_s)}")
    opts += ["-c", str(cpus), f"--mem={mem}"]
    if spec.constraint:
        opts.append(f"--constraint={spec.constraint}")
    if account:
        opts += ["-A", account]
    if exclude:
        opts.append(f"--exclude={','.join(exclude)}")
    return tuple(opts)


def strategy_id(gpu_type: str, partition: str, shape: Shape, kind: StrategyKind) -> str:
    """Short, stable id: ``a6000-1x4-backfill`` (partition added when not the dedicated one)."""
    base = gpu_type.replace("_", "")
    spec = GPU_SPECS[gpu_type]
    part = "" if partition == spec.partition else f"@{partition}"
    return f"{base}{part}-{shape.label}-{kind.value}"


def generate(request: Request, windows: list[Window],
             wait_of: "WaitFn | None" = None) -> list[Strategy]:
    """Every strategy the probed windows support, unranked.

    *wait_of* ``(window, walltime_s) -> seconds`` turns probe answers into wait estimates
    (:class:`rv_tui.allocator.estimator.WaitEstimator`); by default the probe's own answer.
    """
    out: list[Strategy] = []
    for w in windows:
        out.extend(_for_window(request, w, wait_of or _probe_wait))
    return out


WaitFn = "Callable[[Window, int], float | None]"


def _probe_wait(w: Window, walltime_s: int) -> float | None:
    return w.wait_for(walltime_s)


def _for_window(request: Request, w: Window, wait_of) -> list[Strategy]:
    spec = GPU_SPECS[w.gpu_type]
    shape = w.shape
    total = request.time_s
    gpus = shape.nodes * shape.gpus_per_node
    mem = request.mem or default_mem(spec, shape.gpus_per_node)
    cpus = cpus_for(request, spec, shape.gpus_per_node)
    title = f"{spec.label} {shape.label}"
    batch = request.command is not None

    def make(kind: StrategyKind, walltime: int, time_min: int | None, wait: float, su: float,
             label: str, notes: tuple[str, ...] = ()) -> Strategy:
        multi = ((f"{shape.nodes} nodes: one task per node; the program must be distributed"
                  + ("" if spec.infiniband else " (no InfiniBand)")),) if shape.nodes > 1 else ()
        return Strategy(
            id=strategy_id(w.gpu_type, w.partition, shape, kind), label=label,
            gpu_type=w.gpu_type, partition=w.partition, nodes=shape.nodes,
            gpus_per_node=shape.gpus_per_node, kind=kind, walltime_s=walltime,
            time_min_s=time_min, est_wait_s=round(max(0.0, wait), 1), est_su=su, mem=mem,
            cpus_per_task=cpus, constraint=spec.constraint, total_time_s=total,
            sbatch_options=sbatch_options(spec, w.partition, shape, walltime, time_min, mem, cpus,
                                          request.account, request.exclude_nodes),
            notes=notes + multi,
        )

    if spec.name in ("mig", "rtx3090"):
        if total > spec.max_walltime_s:
            return []
        wait = wait_of(w, total)
        if wait is None:
            return []
        kind = StrategyKind.MIG if spec.name == "mig" else StrategyKind.INTERACTIVE
        label = f"{title}, {'free MIG slice' if kind is StrategyKind.MIG else 'interactive partition'}"
        return [make(kind, total, None, wait, su_cost(spec, gpus, total), label)]

    out: list[Strategy] = []
    window = w.window_s
    if total <= spec.max_walltime_s:
        wait = wait_of(w, total)
        if wait is not None:
            if wait <= INSTANT_S:
                out.append(make(StrategyKind.BACKFILL, total, None, wait, su_cost(spec, gpus, total),
                                f"{title}, starts now ({format_human(total)} fits)"))
            else:
                out.append(make(StrategyKind.DIRECT, total, None, wait, su_cost(spec, gpus, total),
                                f"{title}, full {format_human(total)} in queue"))
        short = wait is None or wait > INSTANT_S
        if short and window >= MIN_WINDOW_S and window < total:
            wwait = wait_of(w, window)
            if wwait is not None:
                seg = checkpoint_segment(window, spec)
                out.append(make(
                    StrategyKind.TIMEMIN, total, window, wwait,
                    checkpoint_su(spec, gpus, total, seg) if batch else su_cost(spec, gpus, total),
                    f"{title}, --time-min {format_human(window)} (may get only {format_human(window)})",
                    ("Slurm may cut the walltime to the --time-min window",
                     "rv resubmits the rest: the program must checkpoint on SIGUSR1" if batch else
                     "the session may end after the window, not the requested time"),
                ))
                if batch and seg >= MIN_WINDOW_S:
                    out.append(_checkpoint(make, spec, gpus, total, seg, wwait, title))
    elif batch:
        seg = checkpoint_segment(window if MIN_WINDOW_S <= window < spec.max_walltime_s
                                 else spec.max_walltime_s, spec)
        wait = wait_of(w, seg)
        if wait is not None and seg >= MIN_WINDOW_S:
            out.append(_checkpoint(make, spec, gpus, total, seg, wait, title))
    return out


def _checkpoint(make, spec: GpuSpec, gpus: int, total: int, seg: int, wait: float,
                title: str) -> Strategy:
    n = math.ceil(total / max(seg - CHECKPOINT_BUFFER_S, 60))
    return make(StrategyKind.CHECKPOINT, seg, None, wait, checkpoint_su(spec, gpus, total, seg),
                f"{title}, checkpoint {format_human(seg)} segments (~{n})",
                (f"runs {n} segments of {format_human(seg)}; SIGUSR1 {CHECKPOINT_BUFFER_S // 60} min "
                 "before each ends, then resubmits until the total is done",))
