"""One persistent SSH connection per cluster, shared by every pane and command.

Why: a fresh ``ssh`` process costs ~230 ms and a login-node handshake; one asyncssh
connection runs a command in ~10 ms. The TUI polls squeue/sinfo, tails logs and submits
jobs at the same time, so the pool multiplexes channels over one connection while
keeping the number of open channels below sshd's ``MaxSessions`` (10 by default; the
11th channel fails with "open failed"). On top of that it offers:

* :meth:`RemotePool.run` - one command, with timeout (the remote process is killed),
  optional ``check`` and stdin;
* :meth:`RemotePool.run_many` - a batch of commands as ONE remote shell invocation on one
  channel (one round trip), split back into per-command exit status/stdout/stderr using a
  random nonce marker, so any output (even marker-like text) is safe;
* :meth:`RemotePool.stream` - stdout lines as they arrive (``tail -F``); closing or
  cancelling it kills the remote process group and frees the channel;
* :meth:`RemotePool.read_file` / :meth:`RemotePool.write_file` via SFTP (temp + rename,
  mode set before data lands);
* reconnect with backoff after a drop, connection events, and a command log.

Remote commands are sent as-is to the user's login shell: callers pass POSIX ``sh``
syntax (bash/zsh/dash/ksh login shells are fine; csh-family shells are not supported) and
build every command with :mod:`rv_tui.quoting`. Never put secrets in a command string:
send them with :meth:`write_file`.

The implementation is split by concern: :mod:`~rv_tui.remote.connection` (lifecycle, host keys,
reconnect), :mod:`~rv_tui.remote.slots` (channel cap), :mod:`~rv_tui.remote.commands` (run,
batches), :mod:`~rv_tui.remote.streams`, :mod:`~rv_tui.remote.files` (SFTP, forwarding). This
module assembles them and stays the import path everyone uses.
"""

from __future__ import annotations

import asyncio
import secrets

from collections.abc import Callable
from typing import TYPE_CHECKING

from rv_tui.remote.commandlog import CommandLog
from rv_tui.remote.connection import _Conn
from rv_tui.remote.errors import RemoteError
from rv_tui.remote.files import FilesMixin
from rv_tui.remote.result import CommandResult, ConnectionEvent, ConnState, _failed, _short, _tail
from rv_tui.remote.streams import RemoteStream
from rv_tui.remote.target import SshTarget

if TYPE_CHECKING:
    import asyncssh

__all__ = ["CommandResult", "ConnState", "ConnectionEvent", "RemotePool", "RemoteStream"]


class RemotePool(FilesMixin):
    """Shared asyncssh connection(s) with a channel cap, batching, streams, SFTP and reconnect.

    ``max_channels`` caps concurrently open channels *per connection* (must stay below
    sshd's MaxSessions, 10 by default). When the cap binds and ``extra_connections`` > 0,
    up to that many further connections are opened on demand. Extra callers queue (FIFO).
    """

    def __init__(
        self,
        target: SshTarget,
        *,
        max_channels: int = 8,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        keepalive_interval: float = 15,
        extra_connections: int = 0,
        command_log: CommandLog | None = None,
        reconnect: bool = True,
        max_reconnect_delay: float = 30.0,
        max_reconnect_attempts: int | None = None,
        reconnect_wait: float | None = None,
    ) -> None:
        if not 1 <= max_channels <= 9:
            raise ValueError("max_channels must be 1..9 (sshd's default MaxSessions is 10)")
        self.target = target
        self.max_channels = max_channels
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.keepalive_interval = keepalive_interval
        self.extra_connections = max(0, extra_connections)
        self.command_log = command_log if command_log is not None else CommandLog()
        self.reconnect = reconnect
        self.max_reconnect_delay = max_reconnect_delay
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_wait = reconnect_wait if reconnect_wait is not None else 2 * connect_timeout + 5

        self._sem = asyncio.Semaphore(max_channels * (1 + self.extra_connections))
        self._conns: list[_Conn] = []
        self._state: ConnState = "disconnected"
        self._listeners: list[Callable[[ConnectionEvent], None]] = []
        self._connected_evt = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._opening_extra = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[object]] = set()
        self._closed = False
        self._last_error: RemoteError | None = None
        self._agent: asyncssh.SSHAgentClient | None = None
        self._marker = "RVPID" + secrets.token_hex(6) + ":"
        self._batch_cache: dict[tuple[str, ...], tuple[float, list[CommandResult]]] = {}
        # statistics
        self.open_channels = 0
        self.max_open_channels = 0
        self.channels_opened = 0
        self.queued = 0
        self.max_queued = 0
        self.connects = 0
        self.channel_refusals = 0  # channel opens the server refused (then retried)
        self.round_trips = 0  # channel sessions opened for commands/SFTP (each costs >= 1 round trip)
