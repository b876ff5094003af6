"""What the pool hands back: command results and connection events.

Why a module of its own: these are plain data, and the agent's client side (which must not import
asyncssh) returns the same classes as the in-process pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rv_tui.errors import RvError
from rv_tui.remote.errors import RemoteCommandFailed

__all__ = ["CommandResult", "ConnState", "ConnectionEvent"]

ConnState = Literal["connecting", "connected", "reconnecting", "disconnected", "failed"]


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one remote command."""

    command: str
    exit_status: int | None  # None: killed by a signal or no status received
    stdout: str
    stderr: str
    duration: float  # seconds; for run_many the duration of the whole batch
    exit_signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Return self, or raise :class:`RemoteCommandFailed` if the command did not succeed."""
        if not self.ok:
            raise failed(self)
        return self


@dataclass(frozen=True)
class ConnectionEvent:
    """A change of the pool's connection state (for status bars and logs)."""

    state: ConnState
    detail: str
    at: float  # time.time()
    error: RvError | None = None


def _short(cmd: str, n: int = 80) -> str:
    one = " ".join(cmd.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _tail(text: str, lines: int = 5, chars: int = 600) -> str:
    t = "\n".join(text.rstrip().splitlines()[-lines:])
    return t[-chars:]


def failed(res: CommandResult) -> RemoteCommandFailed:
    what = f"exit {res.exit_status}" if res.exit_status is not None else f"signal {res.exit_signal or '?'}"
    tail = _tail(res.stderr)
    msg = f"remote command failed ({what}): {_short(res.command)}"
    if tail:
        msg += f": {tail}"
    return RemoteCommandFailed(msg, None, command=res.command, exit_status=res.exit_status, stderr=res.stderr)



_failed = failed
