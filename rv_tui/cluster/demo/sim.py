"""The discrete-event simulation behind the demo cluster: a small but real Slurm-like scheduler.

Why a real scheduler: the allocator reads pending reasons, ``--test-only`` start estimates and free
GPUs, and the race engine waits for the first job to start.  Those only make sense if estimates come
from the same reservation plan that later starts the jobs.  So every pool (one GPU type's nodes)
is planned like Slurm's conservative backfill:

* pending jobs in priority order each get the earliest slot where they fit *for their time limit*
  (per-node GPU/CPU/memory accounting, running jobs end when they really will, higher-priority
  reservations are respected); a job whose slot is "now" starts, so lower-priority jobs backfill
  only when they delay nobody;
* ``--time-min`` jobs start now with a shorter limit when the full one does not fit;
* the simulator knows when running jobs will end, so the estimate of the job at the head of a queue
  is exact and later estimates only get earlier.

Priority is age plus a per-job fair-share bonus of at most 30 min; the demo user always has the
full bonus, so a job's estimate is never delayed by jobs that arrive after it.

Time is float seconds since the epoch.  :meth:`Simulation.advance_to` processes events in order;
it is called lazily by every cluster call, so nothing runs while nobody looks.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from rv_tui.cluster.base import (
    ClusterSnapshot, JobInfo, JobSubmission, NodeState, PartitionQueue, ProbeResult, ProbeSpec,
    SubmitResult,
)
from rv_tui.gpus import GPU_SPECS
from rv_tui.paths import RemotePaths

from .clock import to_datetime
from .fs import MemFS
from .jobs import (
    ERR_NODE_CONFIG, ERR_PREFIX, ERR_QOS, ERR_TIME_LIMIT, ShapeError, SimJob, _expand,
    _parse_constraint, _parse_gres, _script_resources, _terminal, parse_mem_mb,
)
from .layout import CPU_POOL, PARTITION_MAXTIME, SimNode, build_nodes, partitions
from .lifecycle import JobLifecycle
from .plan import Block, _Req, _window_now, earliest
from .workload import POOL_LOAD, Workload

FIRST_JOB_ID = 1000001
USER_PRIO_BONUS = 1800.0
#: How long finished jobs of other users stay visible by id (Slurm's MinJobAge).
MIN_JOB_AGE_S = 300.0
#: Pending jobs per pool the backfill pass plans (like bf_max_job_test); later ones wait unplanned.
MAX_PLANNED = 40
#: A requeued job is eligible again this long after the requeue (Slurm: BeginTime ~2 min later).
REQUEUE_DELAY_S = 120.0

class Simulation(JobLifecycle):
    """All nodes, jobs, events and files of the demo cluster."""

    def __init__(self, *, seed: int, start: float, user: str, scratch: str,
                 background: bool = True, warm_s: float = 3 * 3600.0) -> None:
        self.seed = seed
        self.user = user
        self.scratch = scratch
        self.paths = RemotePaths(scratch)
        self.background = background
        self.nodes = build_nodes()
        self.node_by_name = {n.name: n for n in self.nodes}
        self.partitions = partitions(self.nodes)
        self.part_nodes: dict[str, set[str]] = {p: set() for p in self.partitions}
        self.pool_nodes: dict[str, list[SimNode]] = {}
        for n in self.nodes:
            self.pool_nodes.setdefault(n.pool, []).append(n)
            for p in n.partitions:
                self.part_nodes[p].add(n.name)
        self.jobs: dict[int, SimJob] = {}
        self.pending: dict[str, list[SimJob]] = {p: [] for p in self.pool_nodes}
        self.running: dict[str, list[SimJob]] = {p: [] for p in self.pool_nodes}
        self.reservations: dict[str, list[tuple[float, str, Block]]] = {p: [] for p in self.pool_nodes}
        self.emitting: list[SimJob] = []
        self.finished_bg: deque[tuple[float, int]] = deque()
        self.groups: dict[str, int] = {}  # group id -> chain root of the winner
        self.fs = MemFS()
        self.next_id = FIRST_JOB_ID
        self.version = 0
        self._heap: list[tuple[float, int, str, tuple]] = []
        self._seq = 0
        self._dirty: set[str] = set()
        self._starting: list[SimJob] = []
        self.t = start - (warm_s if background else 0.0)
        capacity = {}
        for pool, nodes in self.pool_nodes.items():
            usable = [n for n in nodes if not n.drained]
            if pool == CPU_POOL:
                capacity[pool] = (sum(n.cpus for n in usable), nodes[0].cpus, nodes[0].cpus,
                                  nodes[0].mem)
            else:
                capacity[pool] = (sum(n.gpus for n in usable), nodes[0].gpus, nodes[0].cpus,
                                  nodes[0].mem)
        self.workload = Workload(seed, capacity)
        if background:
            self._warm_fill()
            for pool in self.pool_nodes:
                self._push(self.workload.next_arrival(pool, self.t, 0), "arrive", (pool,))
            self.advance_to(start)
        self.t = start

    # ------------------------------------------------------------------ events

    def _push(self, at: float, kind: str, args: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, args))

    def advance_to(self, t: float) -> None:
        """Process every event up to simulated time *t* (lazily, in order)."""
        while self._heap and self._heap[0][0] <= t:
            at = self._heap[0][0]
            self._flush_output(at)
            self.t = max(self.t, at)
            while self._heap and self._heap[0][0] == at:
                _, _, kind, args = heapq.heappop(self._heap)
                getattr(self, f"_ev_{kind}")(*args)
            self._schedule()
        self._flush_output(t)
        self.t = max(self.t, t)
        self._prune()

    def _ev_arrive(self, pool: str) -> None:
        bg = self.workload.draw(pool)
        self._add_background(pool, bg, self.t)
        pending_units = sum(j.num_nodes * (j.gpus_per_node or j.cpus_per_node)
                            for j in self.pending[pool])
        free_units = sum((n.gpus - n.gpus_used) if n.gpus else (n.cpus - n.cpus_used)
                         for n in self.pool_nodes[pool] if not n.drained)
        self._push(self.workload.next_arrival(pool, self.t, pending_units, free_units), "arrive",
                   (pool,))

    def _ev_end(self, job_id: int, token: int) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.token != token or job.state != "RUNNING":
            return
        self._finish(job)

    def _ev_eligible(self, pool: str) -> None:
        self._dirty.add(pool)  # a job's --begin time has come: plan the pool again

    def _ev_group_cancel(self, group_id: str, winner: int) -> None:
        win = self.jobs[winner]
        victims = [j for j in self.jobs.values()
                   if j.submission is not None and j.submission.group_id == group_id
                   and j.chain_root != win.chain_root and not _terminal(j.state)]
        for v in victims:
            self._cancel(v)
        if victims:
            self._write(win, "out", None, "[rv] race won: cancelled sibling jobs "
                        + " ".join(str(v.id) for v in victims))

    # ------------------------------------------------------------------ job lifecycle

    def _new_id(self) -> int:
        jid = self.next_id
        self.next_id += 1
        return jid

    def _add_background(self, pool: str, bg, submit: float, *, elapsed: float | None = None) -> SimJob | None:
        job = SimJob(id=self._new_id(), user=bg.user, name=bg.name, partition=bg.partition, pool=pool,
                     num_nodes=bg.nodes, gpus_per_node=bg.gpus_per_node, cpus_per_node=bg.cpus_per_node,
                     mem_per_node=bg.mem_per_node, limit_s=bg.limit_s, submit=submit,
                     prio=bg.prio_bonus - submit, run_s=bg.run_s, planned_exit=bg.exit_code)
        if elapsed is not None:  # warm start: place it as already running
            req = _Req(job.gpus_per_node, job.cpus_per_node, job.mem_per_node)
            blocks = self._running_blocks(pool, self.t)
            cand = [n for n in self.pool_nodes[pool]
                    if not n.drained and n.name in self.part_nodes[job.partition]]
            t0, chosen = earliest(cand, blocks, job.num_nodes, req, self.t, 1.0)
            if t0 != self.t:
                self.next_id -= 1
                return None
            self.jobs[job.id] = job
            job.submit = self.t - elapsed - self.workload._rng[pool].uniform(0, 1800)
            job.prio = bg.prio_bonus - job.submit
            self._start(job, chosen, job.limit_s, at=self.t - elapsed)
            return job
        self.jobs[job.id] = job
        self.pending[pool].append(job)
        self._dirty.add(pool)
        return job

    def _warm_fill(self) -> None:
        """Put the cluster in a lived-in state at the start of the warm-up period."""
        for pool in self.pool_nodes:
            if not POOL_LOAD.get(pool):
                continue
            cap = self.workload.capacity[pool][0]
            target = min(1.0, POOL_LOAD[pool].utilization) * cap
            used = 0
            misses = 0
            longest = max(lim for lim, _ in POOL_LOAD[pool].limits)
            while used < target and misses < 12:
                bg = self.workload.draw(pool)
                # running jobs are length-biased: a long job is more likely to be found running
                if self.workload._rng[pool].random() * longest > bg.run_s:
                    continue
                job = self._add_background(pool, bg, self.t,
                                           elapsed=self.workload.initial_elapsed(pool, bg))
                if job is None:
                    misses += 1
                else:
                    used += job.num_nodes * (job.gpus_per_node or job.cpus_per_node)
            for _ in range(POOL_LOAD[pool].queue_gpus // 3):
                bg = self.workload.draw(pool)
                self._add_background(pool, bg, self.t - self.workload._rng[pool].uniform(0, 4 * 3600))
        self._schedule()

    # ------------------------------------------------------------------ scheduling

    def _running_blocks(self, pool: str, t: float) -> dict[str, list[Block]]:
        blocks: dict[str, list[Block]] = {}
        for j in self.running[pool]:
            end = j.end if j.end is not None else math.inf
            for h in j.hosts:
                blocks.setdefault(h, []).append((t, end, j.gpus_per_node, j.cpus_per_node, j.mem_per_node))
        return blocks

    def _candidates(self, pool: str, partition: str, features: tuple[str, ...] = ()) -> list[SimNode]:
        names = self.part_nodes.get(partition, set())
        return [n for n in self.pool_nodes[pool]
                if not n.drained and n.name in names and set(features) <= set(n.features)]

    def _schedule(self) -> None:
        while self._dirty or self._starting:
            while self._dirty:
                pool = min(self._dirty)
                self._dirty.discard(pool)
                self._pass(pool)
            starting, self._starting = sorted(self._starting, key=lambda j: j.id), []
            for job in starting:
                self._start_user_job(job)
                self._arm_end(job)
                self._dirty.add(job.pool)  # re-plan with the real end instead of the limit

    def _pass(self, pool: str) -> None:
        """One backfill pass over *pool* at the current time (see the module docstring)."""
        t = self.t
        blocks = self._running_blocks(pool, t)
        spec = GPU_SPECS.get(pool)
        per_user: dict[str, int] = {}
        for j in self.running[pool]:
            per_user[j.user] = per_user.get(j.user, 0) + j.total_gpus
        reservations: list[tuple[float, str, Block]] = []
        first_waiting = True
        planned = 0
        for job in sorted(self.pending[pool], key=lambda j: (-j.prio, j.id)):
            if job.begin > t:
                job.reason, job.est_start = "BeginTime", job.begin
                continue
            # Only the demo user's jobs meet the per-user QOS limit: background jobs stand for many
            # users, and a limit-blocked job has no reservation, so it could push estimates later.
            if (spec and job.submission is not None
                    and per_user.get(job.user, 0) + job.total_gpus > spec.max_per_user):
                job.reason, job.est_start = "QOSMaxGRESPerUser", None
                continue
            if planned >= MAX_PLANNED:
                job.reason, job.est_start = "Priority", None
                continue
            planned += 1
            req = _Req(job.gpus_per_node, job.cpus_per_node, job.mem_per_node)
            cand = self._candidates(pool, job.partition, job.features)
            start, chosen = earliest(cand, blocks, job.num_nodes, req, t, job.limit_s)
            limit = job.limit_s
            if start != t and job.time_min_s:
                wins = sorted(((_window_now(n, blocks.get(n.name, []), req, t), n.name) for n in cand),
                              reverse=True)[:job.num_nodes]
                if len(wins) == job.num_nodes and wins[-1][0] >= job.time_min_s:
                    start, limit = t, int(min(job.limit_s, wins[-1][0]))
                    chosen = [self.node_by_name[name] for _, name in wins]
            if start == t:
                self._start(job, chosen, limit)
                for n in chosen:
                    blocks.setdefault(n.name, []).append(
                        (t, job.end or math.inf, req.gpus, req.cpus, req.mem))
                per_user[job.user] = per_user.get(job.user, 0) + job.total_gpus
                continue
            job.est_start = start
            job.reason = "Resources" if first_waiting else "Priority"
            first_waiting = False
            if start is not None:
                for n in chosen:
                    block = (start, start + job.limit_s, req.gpus, req.cpus, req.mem)
                    blocks.setdefault(n.name, []).append(block)
                    reservations.append((job.prio, n.name, block))
        self.reservations[pool] = reservations
        self.version += 1

    # ------------------------------------------------------------------ user API

    def resolve(self, partition: str, gres_type: str | None, gpus_per_node: int, nodes: int,
                walltime_s: int, features: tuple[str, ...] = (), any_of: bool = False) -> list[str]:
        """Pools a shape can run in, or :class:`ShapeError` with sbatch's message."""
        if partition not in self.part_nodes:
            raise ShapeError(f"sbatch: error: invalid partition specified: {partition}")
        if walltime_s <= 0 or walltime_s > PARTITION_MAXTIME.get(partition, 3 * 86400):
            raise ShapeError(ERR_TIME_LIMIT)
        pools = []
        for pool, pnodes in self.pool_nodes.items():
            if gpus_per_node > 0:
                if pool == CPU_POOL or (gres_type is not None and GPU_SPECS[pool].gres_type != gres_type):
                    continue
            cand = [n for n in self._candidates(pool, partition)
                    if (any(f in n.features for f in features) if any_of and features
                        else set(features) <= set(n.features))]
            if cand and len(cand) >= nodes and cand[0].gpus >= gpus_per_node:
                pools.append(pool)
        if not pools:
            raise ShapeError(ERR_NODE_CONFIG)
        for pool in pools:
            spec = GPU_SPECS.get(pool)
            total = nodes * gpus_per_node
            if spec and (total > spec.max_per_job or total > spec.max_per_user):
                raise ShapeError(ERR_QOS)
        return pools

    def _default_req(self, pool: str, gpus_per_node: int, cpus: int | None, mem: int | None) -> _Req:
        node = self.pool_nodes[pool][0]
        if pool == CPU_POOL:
            c = cpus or 1
            return _Req(0, c, mem or int(node.mem * c / node.cpus))
        frac = gpus_per_node / node.gpus
        return _Req(gpus_per_node, cpus or max(1, int(node.cpus * frac)),
                    mem or int(node.mem * frac * 0.9))

    def probe(self, spec: ProbeSpec) -> ProbeResult:
        """``sbatch --test-only``: when this scheduler would start a job of this shape."""
        gres_type, gpn = _parse_gres(spec.gres)
        features, any_of = _parse_constraint(spec.constraint)
        try:
            pools = self.resolve(spec.partition, gres_type, gpn, spec.nodes, spec.walltime_s,
                                 features, any_of)
        except ShapeError as exc:
            return ProbeResult(spec, None, str(exc))
        t = self.t
        prio = USER_PRIO_BONUS - t
        best: tuple[float, list[SimNode]] | None = None
        for pool in pools:
            blocks = self._running_blocks(pool, t)
            for rp, name, block in self.reservations[pool]:
                if rp >= prio:
                    blocks.setdefault(name, []).append(block)
            req = self._default_req(pool, gpn, spec.cpus_per_task, parse_mem_mb(spec.mem))
            cand = [n for n in self._candidates(pool, spec.partition)
                    if (any(f in n.features for f in features) if any_of and features
                        else set(features) <= set(n.features))]
            start, chosen = earliest(cand, blocks, spec.nodes, req, t, spec.walltime_s)
            if start is not None and (best is None or start < best[0]):
                best = (start, chosen)
        if best is None:
            return ProbeResult(spec, None, ERR_NODE_CONFIG)
        return ProbeResult(spec, to_datetime(best[0]), None,
                           ",".join(n.name for n in best[1]))

    def submit(self, sub: JobSubmission) -> SubmitResult:
        try:
            self._check_submission(sub)
        except ShapeError as exc:
            return SubmitResult(sub, None, str(exc))
        job = self._add_user_job(sub, chain_root=0,
                                 total_elapsed=float(sub.meta.get("total_elapsed_s", 0) or 0))
        return SubmitResult(sub, str(job.id))

    def _pool_of(self, sub: JobSubmission) -> str:
        if sub.gpus_per_node <= 0:
            return CPU_POOL
        from rv_tui.gpus import resolve_gpu_type

        return resolve_gpu_type(sub.gpu_type)

    def _check_submission(self, sub: JobSubmission) -> None:
        try:
            pool = self._pool_of(sub)
        except Exception as exc:
            raise ShapeError(ERR_PREFIX + "Invalid generic resource (gres) specification") from exc
        gres_type = GPU_SPECS[pool].gres_type if pool in GPU_SPECS else None
        features = GPU_SPECS[pool].features if pool in GPU_SPECS else ()
        pools = self.resolve(sub.partition, gres_type, sub.gpus_per_node, sub.nodes, sub.walltime_s,
                             features)
        if pool not in pools:
            raise ShapeError(ERR_NODE_CONFIG)
        if sub.time_min_s is not None and not 0 < sub.time_min_s <= sub.walltime_s:
            raise ShapeError(ERR_TIME_LIMIT)

    def _add_user_job(self, sub: JobSubmission, *, chain_root: int, total_elapsed: float) -> SimJob:
        pool = self._pool_of(sub)
        cpus, mem = _script_resources(sub.script)
        req = self._default_req(pool, sub.gpus_per_node, sub.meta.get("cpus_per_task") or cpus,
                                parse_mem_mb(sub.meta.get("mem")) or mem)
        t = self.t
        jid = self._new_id()
        out_tpl = sub.stdout_path or f"{self.paths.logs_dir}/%x-%j.out"
        err_tpl = sub.stderr_path or (out_tpl[:-4] + ".err" if out_tpl.endswith(".out") else out_tpl)
        out = _expand(out_tpl, sub.name, jid, self.user)
        err = _expand(err_tpl, sub.name, jid, self.user)
        job = SimJob(id=jid, user=self.user, name=sub.name, partition=sub.partition, pool=pool,
                     num_nodes=sub.nodes, gpus_per_node=req.gpus, cpus_per_node=req.cpus,
                     mem_per_node=req.mem, limit_s=sub.walltime_s, submit=t,
                     prio=USER_PRIO_BONUS - t, time_min_s=sub.time_min_s,
                     features=GPU_SPECS[pool].features if pool in GPU_SPECS else (),
                     submission=sub, stdout=out, stderr=err, chain_root=chain_root or jid,
                     total_elapsed=total_elapsed)
        delay = float(sub.meta.get("begin_delay_s") or 0)
        if delay > 0:
            job.begin = t + delay
            self._push(job.begin, "eligible", (pool,))
        self.jobs[jid] = job
        self.pending[pool].append(job)
        self._dirty.add(pool)
        self.version += 1
        return job

    def requeue(self, job_id: int) -> bool:
        """``scontrol requeue``: a demo-user batch job that runs (or ran) goes back to the queue
        under the same id and runs its script again after :data:`REQUEUE_DELAY_S`; its next run
        is restart N (the owner of its group's claim runs the command again, a loser stays one)."""
        job = self.jobs.get(job_id)
        if job is None or job.submission is None or job.state in ("PENDING", "CANCELLED"):
            return False
        if job.state == "RUNNING":
            stamp = to_datetime(self.t).strftime("%Y-%m-%dT%H:%M:%S")
            self._write(job, "err", None, f"slurmstepd: error: *** JOB {job.id} ON {job.hosts[0]} "
                        f"CANCELLED AT {stamp} DUE TO JOB REQUEUE ***")
            job.program = None  # this run stops here (no checkpoint resubmission)
            self._finish(job, "REQUEUED")
        job.restarts += 1
        job.state, job.reason, job.start, job.est_start, job.end = "PENDING", "BeginTime", None, None, None
        job.hosts, job.exit_code, job.exit_signal, job.token = (), None, None, job.token + 1
        job.begin = self.t + REQUEUE_DELAY_S
        self._push(job.begin, "eligible", (job.pool,))
        self.pending[job.pool].append(job)
        self._dirty.add(job.pool)
        self.version += 1
        return True

    def cancel(self, job_id: int) -> None:
        job = self.jobs.get(job_id)
        if job is not None and not _terminal(job.state):
            self._cancel(job)

    def _prune(self) -> None:
        while self.finished_bg and self.finished_bg[0][0] < self.t - MIN_JOB_AGE_S:
            _, jid = self.finished_bg.popleft()
            self.jobs.pop(jid, None)

    # ------------------------------------------------------------------ views

    def job_info(self, job: SimJob) -> JobInfo:
        t = self.t
        if job.state == "RUNNING" and job.start is not None:
            elapsed = int(t - job.start)
        elif job.start is not None and job.end is not None:
            elapsed = int(job.end - job.start)
        else:
            elapsed = 0
        start = job.start if job.start is not None else job.est_start
        gres = f"gpu:{job.gres_type}:{job.gpus_per_node}" if job.gres_type else ""
        return JobInfo(
            job_id=str(job.id), name=job.name, user=job.user, state=job.state, partition=job.partition,
            reason=job.reason if job.state == "PENDING" else None, nodes=job.hosts,
            num_nodes=job.num_nodes, gres=gres, elapsed_s=elapsed,
            time_limit_s=job.limit_eff or job.limit_s,
            start_time=to_datetime(start) if start is not None else None,
            submit_time=to_datetime(job.submit), exit_code=job.exit_code, exit_signal=job.exit_signal,
            stdout_path=job.stdout, stderr_path=job.stderr, restart_count=job.restarts,
            comment=(f"rvgroup:{job.submission.group_id}"
                     if job.submission is not None and job.submission.group_id else None),
        )

    def snapshot(self) -> ClusterSnapshot:
        nodes = tuple(NodeState(
            name=n.name, partitions=n.partitions, state=n.state(),
            gpu_type=None if n.pool == CPU_POOL else n.pool, gpus_total=n.gpus,
            gpus_used=n.gpus_used, cpus_total=n.cpus, cpus_alloc=n.cpus_used, memory_mb=n.mem,
            memory_alloc_mb=n.mem_used, features=n.features) for n in self.nodes)
        counts: dict[str, list[int]] = {p: [0, 0, 0] for p in self.partitions}
        for pool in self.pool_nodes:
            for j in self.running[pool]:
                counts[j.partition][0] += 1
            for j in self.pending[pool]:
                c = counts[j.partition]
                c[1] += 1
                c[2] += j.total_gpus
        queues = {p: PartitionQueue(p, *c) for p, c in counts.items()}
        return ClusterSnapshot(taken_at=to_datetime(self.t), nodes=nodes, queues=queues)
