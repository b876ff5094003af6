"""Scratch keepalive: protect venvs, env store, workspaces and caches from the 90-day purge.

Once a day, on the first rv command, rv fires one remote command that detaches itself
(``nohup ... &``) and touches the access time of everything under rv's scratch directories and
the caches.  The local timestamp (``rv_home()/last_keepalive``) is written *first*, so a slow or
failing cluster never makes every command retry, and the command is started as a background
task, so it adds no latency.  ``[scratch_keepalive] enabled = false`` turns it off.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rv_tui.cluster.base import Cluster
from rv_tui.config import Config, rv_home
from rv_tui.fsutil import atomic_write
from rv_tui.paths import CACHE_DIRS, RemotePaths
from rv_tui.quoting import q

INTERVAL_S = 24 * 3600
_tasks: set[asyncio.Task[None]] = set()


def stamp_path() -> Path:
    return rv_home() / "last_keepalive"


def keepalive_dirs(scratch: str, hf_cache: str | None = None) -> list[str]:
    p = RemotePaths(scratch)
    dirs = [p.rv_dir, p.workspaces_dir] + [p.cache_dir(n) for n in CACHE_DIRS]
    if hf_cache:
        dirs.append(hf_cache)
    return dirs


def keepalive_command(scratch: str, hf_cache: str | None = None) -> str:
    """A command that returns at once and touches (atime) every file in the background."""
    dirs = " ".join(q(d) for d in keepalive_dirs(scratch, hf_cache))
    inner = f"for d in {dirs}; do [ -d \"$d\" ] && find \"$d\" -exec touch -a -c -h {{}} + ; done"
    return f"nohup sh -c {q(inner)} >/dev/null 2>&1 </dev/null &"


def due(now: float | None = None) -> bool:
    try:
        last = float(stamp_path().read_text().strip())
    except (OSError, ValueError):
        return True
    return (now if now is not None else time.time()) - last >= INTERVAL_S


async def _fire(cluster: Cluster, command: str) -> None:
    try:
        await cluster.exec(command, timeout=60)
    except Exception:  # best effort: a keepalive must never break a command
        pass


def maybe_keepalive(cluster: Cluster, config: Config | None) -> asyncio.Task[None] | None:
    """Start today's keepalive if due; returns the background task (or None when skipped).

    Call from inside a running event loop (the CLI entry after opening the cluster).  Awaiting the
    task is optional; it only sends one short command.
    """
    if cluster.is_demo or config is None or not config.scratch_keepalive.enabled:
        return None
    if not due():
        return None
    atomic_write(stamp_path(), f"{time.time():.0f}\n", mode=0o600)
    cmd = keepalive_command(cluster.scratch, config.shared.hf_cache)
    task = asyncio.get_running_loop().create_task(_fire(cluster, cmd))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task
