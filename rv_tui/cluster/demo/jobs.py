"""One simulated job (:class:`SimJob`) and what sbatch would say about its shape.

Why its own module: the scheduler, the lifecycle and the cluster views all read jobs; the parsing
of a submission's ``--mem``/``--gres``/``--constraint`` and sbatch's rejection texts live with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rv_tui.cluster.base import JobSubmission
from rv_tui.gpus import GPU_SPECS

from .output import Emit, Program

ERR_PREFIX = "sbatch: error: Batch job submission failed: "
ERR_NODE_CONFIG = ERR_PREFIX + "Requested node configuration is not available"
ERR_TIME_LIMIT = ERR_PREFIX + "Requested time limit is invalid (missing or exceeds some limit)"
ERR_QOS = ERR_PREFIX + ("Job violates accounting/QOS policy (job submit limit, user's size and/or "
                        "time limits)")


class ShapeError(Exception):
    """A job shape Slurm would reject at submission; ``str()`` is sbatch's message."""


@dataclass(eq=False)
class SimJob:
    """One job of any user, in any state."""

    id: int
    user: str
    name: str
    partition: str
    pool: str
    num_nodes: int
    gpus_per_node: int
    cpus_per_node: int
    mem_per_node: int
    limit_s: int
    submit: float
    prio: float
    run_s: float | None = None  # known for background jobs; set at start for user jobs
    planned_exit: int = 0
    time_min_s: int | None = None
    features: tuple[str, ...] = ()
    state: str = "PENDING"
    reason: str | None = "None"
    est_start: float | None = None
    start: float | None = None
    end: float | None = None  # planned end while running, actual end afterwards
    limit_eff: int = 0
    hosts: tuple[str, ...] = ()
    exit_code: int | None = None
    exit_signal: int | None = None
    token: int = 0  # invalidates stale end events
    # demo-user jobs only
    submission: JobSubmission | None = None
    program: Program | None = None
    next_emit: Emit | None = None
    stdout: str | None = None
    stderr: str | None = None
    chain_root: int = 0
    total_elapsed: float = 0.0
    outcome: str = "COMPLETED"
    begin: float = 0.0  # not eligible before this (sbatch --begin; the race's stagger)
    restarts: int = 0  # times requeued (SLURM_RESTART_COUNT of the next run)

    @property
    def gres_type(self) -> str | None:
        return GPU_SPECS[self.pool].gres_type if self.pool in GPU_SPECS else None

    @property
    def total_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node


def parse_mem_mb(text: str | None) -> int | None:
    """Slurm ``--mem`` (``187G``, ``64000M``, ``1T``, plain MB) as MB."""
    if not text:
        return None
    text = text.strip().upper()
    mult = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    try:
        if text[-1] in mult:
            return int(float(text[:-1]) * mult[text[-1]])
        return int(float(text))
    except ValueError:
        return None


def _expand(path: str, name: str, job_id: int, user: str) -> str:
    return (path.replace("%x", name).replace("%j", str(job_id)).replace("%u", user)
            .replace("%%", "%"))


_SBATCH_CPUS = re.compile(r"^#SBATCH\s+(?:--cpus-per-task[= ]|-c\s*)(\d+)\s*$", re.MULTILINE)
_SBATCH_MEM = re.compile(r"^#SBATCH\s+--mem[= ](\S+)\s*$", re.MULTILINE)


def _script_resources(script: str) -> tuple[int | None, int | None]:
    """CPUs per task and memory per node from the script's ``#SBATCH`` lines (the submission has no
    structured field for them, and Slurm schedules by what the script asks)."""
    cpus = _SBATCH_CPUS.search(script or "")
    mem = _SBATCH_MEM.search(script or "")
    return (int(cpus.group(1)) if cpus else None, parse_mem_mb(mem.group(1)) if mem else None)


def _terminal(state: str) -> bool:
    return state not in ("PENDING", "RUNNING")


def _parse_gres(gres: str) -> tuple[str | None, int]:
    """``gpu:a6000:4`` -> ("a6000", 4); ``gpu:2`` -> (None, 2); "" -> (None, 0)."""
    parts = [p for p in gres.replace("gres/", "").split(":") if p]
    if not parts:
        return None, 0
    if parts[0] == "gpu":
        parts = parts[1:]
    if len(parts) == 1:
        return (None, int(parts[0])) if parts[0].isdigit() else (parts[0], 1)
    try:
        return parts[0], int(parts[1])
    except (ValueError, IndexError):
        return parts[0], 1


def _parse_constraint(text: str | None) -> tuple[tuple[str, ...], bool]:
    if not text:
        return (), False
    if "|" in text:
        return tuple(f.strip() for f in text.split("|") if f.strip()), True
    return tuple(f.strip() for f in text.replace(",", "&").split("&") if f.strip()), False
