"""The user's SU balance and storage use, as the UVA site tools report them.

Why here and not in ``slurm/``: faces may not import Slurm builders/parsers; this is the core
call they make.  It runs both tools in one round trip over the cluster's connection and never
raises: a cluster without the tools (plain Slurm), a timeout or a lost connection yields an empty
:class:`SiteInfo` (with ``error`` set for the last two), and the faces omit the sections.
"""

from __future__ import annotations

from rv_tui.cluster.base import Cluster
from rv_tui.slurm.site import (
    SITE_COMMAND, SITE_TIMEOUT_S, Allocation, SiteInfo, StorageQuota, parse_site_output,
)


async def fetch_site_info(cluster: Cluster, *, timeout: float = SITE_TIMEOUT_S) -> SiteInfo:
    """Both site tools in one round trip over the cluster's connection; never raises."""
    try:
        res = await cluster.exec(SITE_COMMAND, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - optional information must not fail a command
        return SiteInfo(error=str(exc) or type(exc).__name__)
    return parse_site_output(res.stdout)


def format_su(value: float) -> str:
    """``87,654`` (SUs are whole numbers on Rivanna; fractions are shown when present)."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def format_size(n_bytes: int, unit_of: int | None = None) -> str:
    """``12.5 GB`` / ``1.2 TB`` in binary units (the same multipliers the parser used), choosing
    the unit from ``unit_of`` when given so used/total read in one unit."""
    ref = n_bytes if unit_of is None else unit_of
    for unit, mult in (("PB", 1024 ** 5), ("TB", 1024 ** 4), ("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if ref >= mult:
            v = n_bytes / mult
            return f"{v:.1f} {unit}".replace(".0 ", " ")
    return f"{n_bytes} B"


__all__ = ["Allocation", "SiteInfo", "StorageQuota", "fetch_site_info", "format_size", "format_su"]
