"""What a user asks for (:class:`Request`) and one way to get it (:class:`Strategy`).

These two dataclasses are the vocabulary shared by the allocator (which turns a request into
ranked strategies), the race engine (which submits them), the CLI tables and the TUI panes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class StrategyKind(StrEnum):
    DIRECT = "direct"  # full walltime, waits in the normal queue
    BACKFILL = "backfill"  # full walltime fits a backfill window now
    TIMEMIN = "timemin"  # --time-min lets the backfill scheduler start it in a shorter window
    CHECKPOINT = "checkpoint"  # segments that fit the window, resubmitted until the total is done
    MIG = "mig"  # a free MIG slice
    INTERACTIVE = "interactive"  # the interactive rtx3090 partition


@dataclass(frozen=True)
class Request:
    """A user's request for GPUs, independent of any cluster state."""

    gpus: int = 1
    gpu_type: str | None = None  # canonical rv type; None means any type
    time_s: int = 10740  # total requested time (2:59:00 by default)
    mem: str | None = None  # per node, Slurm syntax ("64G"); None = proportional to GPUs
    single_node: bool = False
    command: str | None = None  # None: an interactive allocation (rv up)
    name: str | None = None
    account: str | None = None
    cpus_per_gpu: int | None = None
    exclude_nodes: tuple[str, ...] = ()
    partition: str | None = None  # restrict to one partition (config defaults.partition or -p)

    def with_(self, **changes: Any) -> "Request":
        return replace(self, **changes)


@dataclass(frozen=True)
class Strategy:
    """One concrete, submittable way to satisfy a request."""

    id: str
    label: str
    gpu_type: str
    partition: str
    nodes: int
    gpus_per_node: int
    kind: StrategyKind
    walltime_s: int  # what the job asks for (a segment length for checkpoint jobs)
    time_min_s: int | None
    est_wait_s: float
    est_su: float  # SUs for the whole requested time
    mem: str  # per node
    cpus_per_task: int
    constraint: str | None
    total_time_s: int  # the request's total time (checkpoint jobs run segments until it is done)
    sbatch_options: tuple[str, ...] = ()  # the exact #SBATCH options, e.g. ("-p", "gpu-a6000")
    notes: tuple[str, ...] = field(default=())  # why this strategy exists / caveats

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def topology(self) -> str:
        """``1x4`` for one node with four GPUs, ``2x2`` for two nodes with two each."""
        return f"{self.nodes}x{self.gpus_per_node}"

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def checkpoint(self) -> bool:
        return self.kind is StrategyKind.CHECKPOINT
