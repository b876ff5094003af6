"""Other users' jobs: what keeps the simulated Rivanna realistically busy.

Each GPU type is a *pool* with a target utilization.  Scarce pools (A100 80GB, H200) are driven
closed-loop: arrivals speed up while their queue is short and slow down while it is long, so they
stay full with a standing queue for hours of simulated time without the queue growing forever.
Plentiful pools (A6000, V100, MIG) run open-loop below capacity, so some GPUs are usually free.
Everything is drawn from per-pool random streams derived from the seed, so a seed replays exactly.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from rv_tui.gpus import GPU_SPECS, SHARED_GPU_PARTITION, SHARED_PARTITION_TYPES

from .layout import CPU_POOL

H = 3600


@dataclass(frozen=True)
class PoolLoad:
    """How busy one pool should look."""

    utilization: float  # mean fraction of GPUs (CPUs for the CPU pool) in use
    queue_gpus: int  # closed loop: keep about this many GPUs pending; 0 = open loop
    shapes: tuple[tuple[int, int, float], ...]  # (nodes, gpus (cpus) per node, weight)
    limits: tuple[tuple[int, float], ...]  # (time limit s, weight)


_LONG = ((H, 0.12), (10740, 0.3), (6 * H, 0.15), (12 * H, 0.15), (24 * H, 0.16), (72 * H, 0.12))
_SHORT = ((H, 0.3), (10740, 0.4), (6 * H, 0.2), (12 * H, 0.1))

POOL_LOAD: dict[str, PoolLoad] = {
    "mig": PoolLoad(0.3, 0, ((1, 1, 1.0),), _SHORT),
    "rtx3090": PoolLoad(0.45, 0, ((1, 1, 0.6), (1, 2, 0.4)), _SHORT),
    "a6000": PoolLoad(0.5, 0, ((1, 1, 0.35), (1, 2, 0.25), (1, 4, 0.25), (1, 8, 0.1), (2, 8, 0.05)),
                      _LONG),
    "a40": PoolLoad(0.85, 6, ((1, 1, 0.35), (1, 2, 0.3), (1, 4, 0.25), (1, 8, 0.1)), _LONG),
    "a100_40": PoolLoad(0.9, 8, ((1, 1, 0.3), (1, 2, 0.3), (1, 4, 0.25), (1, 8, 0.15)), _LONG),
    "a100_80": PoolLoad(1.0, 24, ((1, 1, 0.2), (1, 2, 0.2), (1, 4, 0.3), (1, 8, 0.2), (2, 8, 0.1)),
                        _LONG),
    "v100": PoolLoad(0.5, 0, ((1, 1, 0.5), (1, 2, 0.3), (1, 4, 0.2)), _LONG),
    "h200": PoolLoad(1.0, 8, ((1, 1, 0.3), (1, 2, 0.35), (1, 4, 0.35)), _LONG),
    CPU_POOL: PoolLoad(0.5, 0, ((1, 1, 0.3), (1, 4, 0.3), (1, 8, 0.2), (1, 16, 0.15), (1, 40, 0.05)),
                       _LONG),
}

JOB_NAMES = (
    "ml-train", "llama-ft", "bert-eval", "vit-pretrain", "diffusion-sample", "rl-ppo", "gnn-bench",
    "whisper-asr", "protein-fold", "nerf-render", "sweep-lr", "jupyter", "lora-7b", "t5-distill",
    "clip-zs", "mamba-lm", "sam-seg", "yolo-train", "vllm-serve", "dpo-align", "md-sim", "bash",
)
CPU_JOB_NAMES = ("preprocess", "R-mcmc", "matlab-batch", "bowtie2", "gromacs-prep", "snakemake")


@dataclass(frozen=True)
class BgJob:
    """One background job as the workload generator draws it."""

    user: str
    name: str
    partition: str
    nodes: int
    gpus_per_node: int
    cpus_per_node: int
    mem_per_node: int
    limit_s: int
    run_s: float
    prio_bonus: float
    exit_code: int


def _weighted(rng: random.Random, items: tuple[tuple, ...]) -> tuple:
    total = sum(i[-1] for i in items)
    x = rng.random() * total
    for item in items:
        x -= item[-1]
        if x <= 0:
            return item
    return items[-1]


def _users(rng: random.Random, n: int = 60) -> list[str]:
    """Rivanna-style computing ids (``abc1de``)."""
    out = []
    for _ in range(n):
        a = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.choice((2, 3))))
        b = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.choice((1, 2))))
        out.append(f"{a}{rng.randint(1, 9)}{b}")
    return out


class Workload:
    """Draws background jobs and their arrival times for every pool."""

    def __init__(self, seed: int, capacity: dict[str, tuple[int, int, int, int]]):
        """*capacity*: pool -> (resource units, per-node units, node cpus, node memory MB)."""
        self.seed = seed
        self.capacity = capacity
        self.users = _users(random.Random(f"{seed}/users"))
        self._rng = {p: random.Random(f"{seed}/pool/{p}") for p in capacity}
        self._base_rate = {p: self._rate(p) for p in capacity}

    def _mean_work(self, pool: str) -> float:
        load = POOL_LOAD[pool]
        sw = sum(s[2] for s in load.shapes)
        units = sum(s[0] * s[1] * s[2] for s in load.shapes) / sw
        lw = sum(w for _, w in load.limits)
        run = sum(lim * w for lim, w in load.limits) / lw * (0.12 + 0.88 * 0.5)
        return units * run

    def _rate(self, pool: str) -> float:
        """Arrivals per second that give the target utilization (Little's law)."""
        return POOL_LOAD[pool].utilization * self.capacity[pool][0] / self._mean_work(pool)

    def next_arrival(self, pool: str, t: float, pending_units: int, free_units: int = 0) -> float:
        """Time of the pool's next arrival after *t* (closed loop for queued pools)."""
        load = POOL_LOAD[pool]
        rate = self._base_rate[pool]
        if load.queue_gpus:
            hungry = pending_units < load.queue_gpus or (free_units > 1 and pending_units < 2 * load.queue_gpus)
            rate *= 8.0 if hungry else 0.25
        return t + self._rng[pool].expovariate(rate)

    def draw(self, pool: str) -> BgJob:
        """One background job for *pool*."""
        rng = self._rng[pool]
        load = POOL_LOAD[pool]
        cap, per_node, node_cpus, node_mem = self.capacity[pool]
        nodes, units, _ = _weighted(rng, load.shapes)
        units = min(units, per_node)
        limit, _ = _weighted(rng, load.limits)
        if pool == CPU_POOL:
            partition = "standard" if limit > 12 * H or rng.random() < 0.7 else "interactive"
            cpus, mem, gpus = units, int(node_mem * units / node_cpus), 0
            name = rng.choice(CPU_JOB_NAMES)
        else:
            spec = GPU_SPECS[pool]
            limit = min(limit, spec.max_walltime_s)
            partition = spec.partition
            if pool in SHARED_PARTITION_TYPES and rng.random() < 0.4:
                partition = SHARED_GPU_PARTITION
            gpus = units
            cpus = max(1, node_cpus * units // per_node)
            mem = int(node_mem * units / per_node * 0.9)
            name = rng.choice(JOB_NAMES)
        run = float(limit) if rng.random() < 0.12 else limit * rng.uniform(0.05, 0.95)
        exit_code = 1 if rng.random() < 0.06 else 0
        return BgJob(user=rng.choice(self.users), name=name, partition=partition, nodes=nodes,
                     gpus_per_node=gpus, cpus_per_node=cpus, mem_per_node=mem, limit_s=limit,
                     run_s=max(60.0, run), prio_bonus=rng.uniform(0, 1800), exit_code=exit_code)

    def initial_elapsed(self, pool: str, job: BgJob) -> float:
        """How long a job found running at warm start has already run."""
        return self._rng[pool].uniform(0, job.run_s * 0.95)
