"""Record Cluster calls for clusters that have no command log of their own (the demo).

The SSH cluster logs the exact shell commands through its pool (``cluster.command_log``).  A
cluster without that attribute still deserves a command pane, so the app wraps it in
:class:`RecordingCluster`, which forwards every call unchanged and records one
:class:`CommandRecord` per call (``snapshot()``, ``submit(3 jobs)``, ...).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from rv_tui.cluster.base import Cluster, FileLine
from rv_tui.remote.commandlog import CommandLog


def command_log_of(cluster: Any) -> CommandLog | None:
    """The cluster's own command log, if it keeps one (SshCluster: its pool's log)."""
    log = getattr(cluster, "command_log", None)
    if log is None:
        pool = getattr(cluster, "pool", None)
        log = getattr(pool, "command_log", None)
    return log if isinstance(log, CommandLog) else None


def _describe(name: str, args: tuple, kwargs: dict) -> str:
    parts = []
    for a in args:
        if isinstance(a, (list, tuple)):
            parts.append(f"{len(a)} item{'s' if len(a) != 1 else ''}")
        elif isinstance(a, (bytes, bytearray)):
            parts.append(f"{len(a)} bytes")
        else:
            text = str(a)
            parts.append(text if len(text) < 80 else text[:77] + "…")
    parts += [f"{k}={v!r}" for k, v in kwargs.items() if k not in ("data",)]
    return f"{name}({', '.join(parts)})"


class RecordingCluster:
    """A transparent Cluster wrapper that records each call in :attr:`command_log`."""

    _RECORDED = ("now", "snapshot", "jobs", "test_only", "submit", "cancel", "read_file",
                 "write_file", "exec")

    def __init__(self, inner: Cluster, clock: Callable[[], float] = time.time,
                 log: CommandLog | None = None) -> None:
        self._inner = inner
        self._clock = clock
        self.command_log = log or CommandLog()

    @property
    def inner(self) -> Cluster:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in self._RECORDED and callable(attr):
            async def recorded(*args: Any, **kwargs: Any) -> Any:
                started = self._clock()
                t0 = time.monotonic()
                status: int | None = 0
                error: str | None = None
                try:
                    return await attr(*args, **kwargs)
                except Exception as exc:
                    status, error = None, type(exc).__name__
                    raise
                finally:
                    took = 0.0 if self._clock is not time.time else time.monotonic() - t0
                    label = _describe(name, args, kwargs)
                    if name == "exec" and args:
                        label = str(args[0])
                    self.command_log.record(label, started_at=started, duration=took,
                                            exit_status=status, error=error,
                                            kind="exec" if name == "exec" else "call")
            return recorded
        return attr

    def stream_files(self, paths: Sequence[str], *, from_start: bool = True) -> AsyncIterator[FileLine]:
        self.command_log.record(_describe("stream_files", (list(paths),), {}),
                                started_at=self._clock(), duration=0.0, exit_status=0,
                                kind="stream")
        return self._inner.stream_files(paths, from_start=from_start)
