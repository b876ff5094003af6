"""The one GPU table for Rivanna-like clusters.

Every other module (allocator, cost, demo cluster, TUI availability pane) reads GPU facts from
here, so a rate or a limit changes in exactly one place.  Numbers come from the seeds' table and
the original rv's ``GPU_SPECS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rv_tui.errors import RvError


@dataclass(frozen=True)
class GpuSpec:
    """Facts about one GPU type as users and Slurm see it."""

    name: str  # canonical name used everywhere in rv (e.g. "a100_80")
    label: str  # human label ("A100 80GB")
    partition: str  # the dedicated Slurm partition
    gres_type: str  # the GRES type Slurm reports ("a100" for both A100 sizes)
    vram_gb: int
    su_per_gpu_hour: float
    max_per_user: int
    max_per_job: int
    per_node: int
    max_walltime_s: int
    node_memory_mb: int
    cpus_per_node: int
    features: tuple[str, ...] = ()
    infiniband: bool = False
    nvlink: bool = False
    aliases: tuple[str, ...] = field(default=())

    @property
    def free(self) -> bool:
        """MIG slices cost no SUs."""
        return self.su_per_gpu_hour == 0

    @property
    def constraint(self) -> str | None:
        """The ``--constraint`` expression selecting this type, if one is needed."""
        return "&".join(self.features) if self.features else None

    def gres(self, count: int) -> str:
        """``--gres`` value for *count* GPUs of this type on one node."""
        return f"gpu:{self.gres_type}:{count}"

    def su_cost(self, gpus: int, seconds: float) -> float:
        """Service units charged for *gpus* GPUs held for *seconds*."""
        return self.su_per_gpu_hour * gpus * seconds / 3600.0


_DAY = 86400

GPU_SPECS: dict[str, GpuSpec] = {
    s.name: s
    for s in (
        GpuSpec("mig", "MIG 1g.10gb", "gpu-mig", "1g.10gb", 10, 0.0, 28, 1, 56, 3 * _DAY,
                2_000_000, 128, aliases=("1g.10gb",)),
        GpuSpec("rtx3090", "RTX 3090", "interactive-rtx3090", "rtx3090", 24, 113.23, 2, 2, 4,
                12 * 3600, 257_000, 32, aliases=("3090",)),
        GpuSpec("a6000", "RTX A6000", "gpu-a6000", "a6000", 48, 142.73, 32, 8, 8, 3 * _DAY,
                257_000, 48),
        GpuSpec("a40", "A40", "gpu-a40", "a40", 48, 186.69, 32, 8, 8, 3 * _DAY, 257_000, 48),
        GpuSpec("a100_40", "A100 40GB", "gpu-a100-40", "a100", 40, 463.81, 32, 8, 8, 3 * _DAY,
                512_000, 128, features=("a100_40gb",), aliases=("a100-40", "a100_40gb")),
        GpuSpec("a100_80", "A100 80GB", "gpu-a100-80", "a100", 80, 508.89, 32, 8, 8, 3 * _DAY,
                1_000_000, 128, features=("gpupod", "a100_80gb"), infiniband=True, nvlink=True,
                aliases=("a100", "a100-80", "a100_80gb")),
        GpuSpec("v100", "V100", "gpu-v100", "v100", 32, 20.96, 32, 4, 4, 3 * _DAY, 384_000, 40),
        GpuSpec("h200", "H200", "gpu-h200", "h200", 141, 816.67, 4, 4, 8, 3 * _DAY,
                1_500_000, 96),
    )
}

#: Partitions rv probes and shows (the shared ``gpu`` partition first, then the dedicated ones).
GPU_PARTITIONS: tuple[str, ...] = ("gpu",) + tuple(s.partition for s in GPU_SPECS.values())

#: The shared multi-type partition and the types it holds on Rivanna.
SHARED_GPU_PARTITION = "gpu"
SHARED_PARTITION_TYPES: tuple[str, ...] = ("a6000", "a40", "a100_40", "a100_80", "v100", "h200")


class UnknownGpuType(RvError):
    """Raised for a GPU type name rv does not know; lists the valid ones."""


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for spec in GPU_SPECS.values():
        table[spec.name] = spec.name
        table[spec.name.replace("_", "-")] = spec.name
        for alias in spec.aliases:
            table[alias] = spec.name
    return table


_ALIASES = _alias_table()


def valid_type_names() -> list[str]:
    """Every name users may type, canonical names first."""
    canonical = list(GPU_SPECS)
    return canonical + sorted(a for a in _ALIASES if a not in GPU_SPECS)


def resolve_gpu_type(name: str) -> str:
    """Map a user-typed GPU type (canonical or alias, any case) to its canonical name."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnknownGpuType(
        f"unknown GPU type {name!r}",
        hint="valid types: " + ", ".join(GPU_SPECS) + " (aliases: "
        + ", ".join(a for a in valid_type_names() if a not in GPU_SPECS) + ")",
    )


def gpu_spec(name: str) -> GpuSpec:
    """The spec of a GPU type given by canonical name or alias."""
    return GPU_SPECS[resolve_gpu_type(name)]


def types_for_gres(gres_type: str, features: tuple[str, ...] | list[str] = ()) -> str | None:
    """Canonical type for a GRES type seen in sinfo, using node features to split the A100s."""
    gres_type = gres_type.lower()
    feats = set(features)
    if gres_type == "a100":
        if "a100_40gb" in feats:
            return "a100_40"
        return "a100_80"
    for spec in GPU_SPECS.values():
        if spec.gres_type == gres_type:
            return spec.name
    return None
