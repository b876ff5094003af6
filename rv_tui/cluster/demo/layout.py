"""The simulated Rivanna: nodes, partitions and their limits.

Node counts are smaller than the real machine but keep its shape: the GPU types of
:mod:`rv_tui.gpus` with their per-node counts, features and memory, the shared ``gpu`` partition
over the big types, one drained node, and a few CPU nodes for ``standard``/``interactive``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rv_tui.gpus import GPU_SPECS, SHARED_GPU_PARTITION, SHARED_PARTITION_TYPES

#: type -> (node name prefix, node count); names look like Rivanna's (udc-an37-4).
NODE_GROUPS: dict[str, tuple[str, int]] = {
    "mig": ("udc-an26", 1),
    "rtx3090": ("udc-ba27", 2),
    "a6000": ("udc-an37", 10),
    "a40": ("udc-an38", 6),
    "a100_40": ("udc-an34", 4),
    "a100_80": ("udc-an36", 12),
    "v100": ("udc-ba26", 6),
    "h200": ("udc-an40", 4),
}
CPU_NODES = ("udc-ba30", 6, 40, 375_000)  # prefix, count, cpus, memory MB
#: Nodes that are drained for maintenance (they show but never take work).
DRAINED = frozenset({"udc-an38-6"})
#: Pool name for CPU-only nodes (jobs without GPUs).
CPU_POOL = "cpu"

PARTITION_MAXTIME: dict[str, int] = {
    SHARED_GPU_PARTITION: 3 * 86400,
    **{s.partition: s.max_walltime_s for s in GPU_SPECS.values()},
    "standard": 7 * 86400,
    "interactive": 12 * 3600,
}


@dataclass
class SimNode:
    """One node and what is allocated on it right now."""

    name: str
    pool: str  # GPU type, or CPU_POOL
    gres_type: str | None
    partitions: tuple[str, ...]
    features: tuple[str, ...]
    gpus: int
    cpus: int
    mem: int
    drained: bool = False
    gpus_used: int = 0
    cpus_used: int = 0
    mem_used: int = 0

    def state(self) -> str:
        if self.drained:
            return "drained"
        if self.gpus_used == 0 and self.cpus_used == 0:
            return "idle"
        if (self.gpus and self.gpus_used >= self.gpus) or self.cpus_used >= self.cpus:
            return "allocated"
        return "mixed"


def build_nodes() -> list[SimNode]:
    """Every node of the demo cluster, GPU nodes first, in a stable order."""
    nodes: list[SimNode] = []
    for gtype, (prefix, count) in NODE_GROUPS.items():
        spec = GPU_SPECS[gtype]
        parts = (spec.partition,)
        if gtype in SHARED_PARTITION_TYPES:
            parts = (SHARED_GPU_PARTITION, spec.partition)
        for i in range(1, count + 1):
            name = f"{prefix}-{i}"
            nodes.append(SimNode(name=name, pool=gtype, gres_type=spec.gres_type, partitions=parts,
                                 features=spec.features, gpus=spec.per_node,
                                 cpus=spec.cpus_per_node, mem=spec.node_memory_mb,
                                 drained=name in DRAINED))
    prefix, count, cpus, mem = CPU_NODES
    for i in range(1, count + 1):
        nodes.append(SimNode(name=f"{prefix}-{i}", pool=CPU_POOL, gres_type=None,
                             partitions=("standard", "interactive"), features=(), gpus=0,
                             cpus=cpus, mem=mem))
    return nodes


def partitions(nodes: list[SimNode]) -> list[str]:
    """Partition names in display order (the shared gpu partition first)."""
    seen: dict[str, None] = {}
    for n in nodes:
        for p in n.partitions:
            seen.setdefault(p, None)
    order = [SHARED_GPU_PARTITION] + [s.partition for s in GPU_SPECS.values()]
    return [p for p in order if p in seen] + [p for p in seen if p not in order]
