"""Wait-time estimation in one place, so it can learn from history later.

The original rv used constants (30 s for backfill, "~1440 m" otherwise).  Here the base is
Slurm's own answer to ``sbatch --test-only`` for the exact job shape and walltime (the backfill
scheduler's plan given the running jobs' limits), corrected by the queue: jobs pending in the same
partition ask for the same GPUs and may overtake through priority/fair-share, which the test-only
answer does not know about.  ``calibration`` (observed / estimated, per partition) is the hook for
learning from the race history; it defaults to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rv_tui.allocator.strategies import INSTANT_S, Window
from rv_tui.cluster.base import ClusterSnapshot, GpuAvailability, PartitionQueue

#: Weight of queue pressure: a partition whose pending GPUs equal its total adds this fraction.
QUEUE_WEIGHT = 0.5
#: Guess per queued GPU-fraction when no probe answer exists (seconds).
NO_PROBE_BASE_S = 3600.0
#: Upper bound of any estimate (a week): beyond that the number means "not soon".
MAX_WAIT_S = 7 * 86400.0


@dataclass
class WaitEstimator:
    """Turns probe answers plus queue state into an estimated wait in seconds."""

    snapshot: ClusterSnapshot | None = None
    calibration: dict[str, float] = field(default_factory=dict)

    def _queue(self, partition: str) -> PartitionQueue | None:
        return self.snapshot.queues.get(partition) if self.snapshot else None

    def _avail(self, gpu_type: str, partition: str) -> GpuAvailability | None:
        if not self.snapshot:
            return None
        for a in self.snapshot.availability():
            if a.gpu_type == gpu_type and a.partition == partition:
                return a
        return None

    def queue_pressure(self, gpu_type: str, partition: str) -> float:
        """Pending GPUs in the partition over its total GPUs of this type (0 = empty queue)."""
        q = self._queue(partition)
        a = self._avail(gpu_type, partition)
        if not q or not a or a.gpus_total == 0:
            return 0.0
        return min(q.pending_gpus / a.gpus_total, 4.0)

    def estimate(self, probe_wait_s: float | None, gpu_type: str, partition: str,
                 gpus: int = 1) -> float:
        """Estimated seconds until a job starts.

        * probe says "now" -> the probe's answer (a few seconds): nothing can overtake it;
        * probe says later -> that time, stretched by queue pressure and calibration;
        * no probe answer -> a queue-based guess (free GPUs now: a minute; else pressure-scaled).
        """
        factor = self.calibration.get(partition, 1.0)
        if probe_wait_s is not None:
            if probe_wait_s <= INSTANT_S:
                return max(0.0, probe_wait_s)
            pressure = self.queue_pressure(gpu_type, partition)
            return min(probe_wait_s * (1 + QUEUE_WEIGHT * pressure) * factor, MAX_WAIT_S)
        a = self._avail(gpu_type, partition)
        if a and a.max_free_on_one_node >= gpus and self.queue_pressure(gpu_type, partition) == 0:
            return 60.0 * factor
        pressure = self.queue_pressure(gpu_type, partition)
        return min(NO_PROBE_BASE_S * (1 + pressure) * factor, MAX_WAIT_S)

    def wait_of(self, window: Window, walltime_s: int) -> float | None:
        """Adapter for :func:`rv_tui.allocator.strategies.generate`: None when Slurm refused."""
        probe = window.wait_for(walltime_s)
        if probe is None:
            return None
        gpus = window.shape.nodes * window.shape.gpus_per_node
        return self.estimate(probe, window.gpu_type, window.partition, gpus)
