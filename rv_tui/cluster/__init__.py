"""Cluster implementations behind one interface (see :mod:`rv_tui.cluster.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rv_tui.cluster.base import Cluster

if TYPE_CHECKING:
    from rv_tui.config import Config


async def open_cluster(config: "Config | None", *, demo: bool = False, seed: int | None = None,
                       speed: float | None = None) -> Cluster:
    """The cluster a face should talk to: the demo when asked for or when nothing is configured."""
    if demo or config is None or config.connection is None:
        from rv_tui.cluster.demo import DemoCluster

        # persisted: consecutive `rv --demo` commands see the same simulated cluster
        return DemoCluster(seed=seed, speed=speed, persist=True)
    from rv_tui.cluster.ssh import SshCluster

    cluster = SshCluster.from_config(config)
    await cluster.connect()
    return cluster


__all__ = ["Cluster", "open_cluster"]
