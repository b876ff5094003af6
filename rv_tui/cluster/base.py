"""The Cluster interface: the one seam between rv's core and a Slurm cluster.

The allocator, race engine, log merger, workspace code and both faces speak only to a
:class:`Cluster`.  Two implementations exist: ``cluster.ssh.SshCluster`` (real Slurm over the
asyncssh pool) and ``cluster.demo.DemoCluster`` (a simulated Rivanna).  Because the demo
implements the same methods with the same dataclasses, every pane and command runs its real code
path against it; nothing special-cases the demo.

All times are timezone-aware datetimes in the *cluster's* zone (Slurm prints local time; the
implementation asks the cluster for its clock and offset), so a laptop in another zone computes
the same waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from rv_tui.slurm.model import (  # noqa: F401 (re-exported: the Cluster interface's types)
    TERMINAL_STATES, STARTED_STATES, ControllerUnavailable, NodeState, PartitionQueue,
    GpuAvailability, ClusterSnapshot, ProbeSpec, ProbeResult, JobSubmission, SubmitResult, JobInfo,
    History, FileLine, ExecResult,
)
from rv_tui.slurm import model as _model

__all__ = ["Cluster", *_model.__all__]


@runtime_checkable
class Cluster(Protocol):
    """Everything rv needs from a Slurm cluster.

    Implementations batch where the method takes a list: one call is one round trip.
    """

    name: str  # display name (host alias, or "demo")
    user: str  # the Slurm user rv acts as
    scratch: str  # remote scratch root, e.g. /scratch/abc1de
    is_demo: bool

    async def now(self) -> datetime:
        """The cluster's current time (aware, in the cluster's zone)."""
        ...

    async def snapshot(self) -> ClusterSnapshot:
        """Nodes with exact GPU use, and per-partition queue depth."""
        ...

    async def jobs(self, job_ids: Sequence[str] | None = None, *, all_users: bool = False) -> list[JobInfo]:
        """The user's jobs (or the given ids, including recently finished ones when known)."""
        ...

    async def history(self, job_ids: Sequence[str]) -> History:
        """Final state, exit code, requeue count and work dir of the given jobs from the
        accounting database: one batched ``sacct`` (one round trip) for all ids.  A cluster
        without accounting answers ``History(available=False, note=...)``, never raises."""
        ...

    async def test_only(self, specs: Sequence[ProbeSpec]) -> list[ProbeResult]:
        """Run ``sbatch --test-only`` for every spec in one round trip; results in order."""
        ...

    async def submit(self, submissions: Sequence[JobSubmission]) -> list[SubmitResult]:
        """Submit every job in one round trip; results in order, failures carry the error."""
        ...

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs; ids that already ended are not an error."""
        ...

    def stream_files(self, paths: Sequence[str], *, from_start: bool = True) -> AsyncIterator[FileLine]:
        """Follow remote files (``tail -F`` semantics: late files, truncation) as one stream."""
        ...

    async def read_file(self, path: str) -> bytes: ...

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o600) -> None: ...

    async def tail_file(self, path: str, lines: int, *, max_bytes: int = 8 << 20) -> bytes:
        """The last ``lines`` lines of a remote file (at most ``max_bytes`` of them), read on the
        cluster: the rest of the file never travels.  Missing: ``RemoteFileNotFound``."""
        ...

    async def download_file(self, path: str, local_path: str) -> int:
        """Copy a remote file to ``local_path`` block by block (never whole in memory); the
        number of bytes written.  Missing: ``RemoteFileNotFound``."""
        ...

    async def replace_file(self, path: str, data: bytes, *, expect: bytes | None,
                           mode: int = 0o600) -> bool:
        """Compare-and-swap: atomically replace ``path`` with ``data`` (``mode``, parents 0700)
        only if its content is still ``expect`` (None: it must not exist), checked and swapped
        under an exclusive lock on ``<path>.lock``.  False when it changed meanwhile (nothing
        written: re-read and retry); an unreadable current file raises."""
        ...

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        """Run a shell command on the login node (POSIX sh, quoted by the caller)."""
        ...

    async def close(self) -> None: ...
