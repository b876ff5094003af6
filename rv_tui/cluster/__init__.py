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
    from rv_tui.agent.launcher import open_agent
    from rv_tui.cluster.ssh import SshCluster

    # the warm connection of the local rv agent (started now if needed); None: connect directly
    pool = await open_agent(config)
    if pool is not None:
        cluster = SshCluster(pool, name=config.connection.host, user=config.connection.user,  # type: ignore[arg-type]
                             scratch=config.scratch)
    else:
        cluster = SshCluster.from_config(config)
    try:
        await cluster.connect()
    except BaseException:
        await cluster.close()
        raise
    return cluster


__all__ = ["Cluster", "open_cluster"]
