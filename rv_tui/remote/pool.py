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
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import posixpath
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import asyncssh

from rv_tui.errors import RvError
from rv_tui.remote.commandlog import CommandLog
from rv_tui.remote.errors import (
    AuthFailed,
    CommandTimeout,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    RemoteCommandFailed,
    RemoteError,
    RemoteFileError,
    RemoteFileNotFound,
)
from rv_tui.remote.target import SshTarget

log = logging.getLogger(__name__)

__all__ = ["CommandResult", "ConnState", "ConnectionEvent", "RemotePool", "RemoteStream"]

_MAX_INLINE_SCRIPT = 64 * 1024
_OPEN_RETRY_S = 10.0  # how long to keep retrying a refused channel open
_CAP_RESTORE_S = 5.0  # after a refusal, raise the lowered cap by one this often
_T = TypeVar("_T")

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
            raise _failed(self)
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


def _failed(res: CommandResult) -> RemoteCommandFailed:
    what = f"exit {res.exit_status}" if res.exit_status is not None else f"signal {res.exit_signal or '?'}"
    tail = _tail(res.stderr)
    msg = f"remote command failed ({what}): {_short(res.command)}"
    if tail:
        msg += f": {tail}"
    return RemoteCommandFailed(msg, None, command=res.command, exit_status=res.exit_status, stderr=res.stderr)


class _Dropped(Exception):
    """Internal: the connection went away under a command."""


class _Conn:
    """One SSH connection and the channels currently open on it."""

    _ids = 0

    def __init__(self) -> None:
        _Conn._ids += 1
        self.id = _Conn._ids
        self.conn: asyncssh.SSHClientConnection | None = None
        self.open = 0
        self.lost = False
        self.cap: int | None = None  # lowered after the server refused a channel ("open failed")
        self.cap_restore_at = 0.0

    @property
    def usable(self) -> bool:
        return self.conn is not None and not self.lost and not self.conn.is_closed()


class _Client(asyncssh.SSHClient):
    def __init__(self, pool: RemotePool, holder: _Conn) -> None:
        self._pool = pool
        self._holder = holder

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool._on_lost(self._holder, exc)


@dataclass
class _Raw:
    stdout: bytes
    stderr: bytes
    exit_status: int | None
    exit_signal: str | None
    started_at: float
    duration: float


class RemotePool:
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
        # statistics
        self.open_channels = 0
        self.max_open_channels = 0
        self.channels_opened = 0
        self.queued = 0
        self.max_queued = 0
        self.connects = 0
        self.channel_refusals = 0  # channel opens the server refused (then retried)

    # ------------------------------------------------------------------ lifecycle / events

    @property
    def state(self) -> ConnState:
        return self._state

    @property
    def connection_count(self) -> int:
        return sum(1 for c in self._conns if c.usable)

    @property
    def last_error(self) -> RemoteError | None:
        return self._last_error

    def add_listener(self, callback: Callable[[ConnectionEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on every connection state change; returns a remover."""
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def remove_listener(self, callback: Callable[[ConnectionEvent], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def reset_stats(self) -> None:
        self.max_open_channels = self.open_channels
        self.max_queued = self.queued
        self.channels_opened = 0

    def _emit(self, state: ConnState, detail: str, error: RvError | None = None) -> None:
        self._state = state
        if state == "connected":
            self._connected_evt.set()
        else:
            self._connected_evt.clear()
        ev = ConnectionEvent(state, detail, time.time(), error)
        log.info("ssh %s: %s", state, detail)
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                log.exception("connection listener failed")

    async def __aenter__(self) -> RemotePool:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the primary connection (no-op if connected). Raises typed RemoteErrors."""
        if self._closed:
            raise ConnectionLost("the SSH pool is closed")
        async with self._connect_lock:
            if any(c.usable for c in self._conns):
                return
            if self._reconnect_task is not None and not self._reconnect_task.done():
                # a background reconnect is running; wait for it rather than racing it
                pass
            else:
                self._emit("connecting", f"connecting to {self.target.display}")
                try:
                    holder = await self._open_connection()
                except RemoteError as exc:
                    self._last_error = exc
                    self._emit("failed", exc.message, exc)
                    raise
                self._conns.append(holder)
                self._emit("connected", f"connected to {self.target.display}")
                return
        await self._wait_connected(time.monotonic() + self.reconnect_wait)

    async def close(self) -> None:
        """Close every connection; in-flight commands fail with ConnectionLost."""
        if self._closed:
            return
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnect_task
        for t in list(self._bg):
            t.cancel()
        conns, self._conns = self._conns, []
        for c in conns:
            c.lost = True
            if c.conn is not None:
                c.conn.close()
        for c in conns:
            if c.conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.conn.wait_closed(), 5)
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        self._slot_freed.set()
        self._emit("disconnected", "closed")

    # ------------------------------------------------------------------ connecting

    def _known_hosts_arg(self) -> object:
        path = self.target.known_hosts_path
        if path.is_file():
            return str(path)
        # no file: every key is unknown (never None, which would disable checking)
        return asyncssh.import_known_hosts("")

    async def _client_keys(self) -> object:
        if not self.target.identity_files:
            return ()  # asyncssh default: ssh-agent (SSH_AUTH_SOCK) then ~/.ssh/id_*
        keys: list[object] = []
        for f in self.target.identity_files:
            try:
                keys.extend(asyncssh.load_keypairs(f))
            except (OSError, asyncssh.KeyImportError, ValueError) as exc:
                raise AuthFailed(
                    f"cannot load SSH key {f}: {exc}",
                    hint="check connection.identity_file in config.toml (encrypted keys must be in ssh-agent)",
                ) from None
        if os.environ.get("SSH_AUTH_SOCK"):
            try:
                if self._agent is None:
                    self._agent = await asyncssh.connect_agent()
                if self._agent is not None:
                    keys.extend(await self._agent.get_keys())
            except Exception:  # agent unavailable: identity files alone
                self._agent = None
        return keys

    async def _open_connection(self) -> _Conn:
        t = self.target
        holder = _Conn()
        options: dict[str, object] = {
            "port": t.port,
            "username": t.user,
            "known_hosts": self._known_hosts_arg(),
            "client_keys": await self._client_keys(),
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": 3,
            "config": None,  # already resolved into SshTarget
            "client_factory": lambda: _Client(self, holder),
        }
        if not t.identity_files:
            options.pop("client_keys")
        if t.proxy_jump:
            options["tunnel"] = t.proxy_jump
        try:
            holder.conn = await asyncssh.connect(t.host, **options)  # type: ignore[arg-type]
        except asyncssh.HostKeyNotVerifiable as exc:
            raise await self._host_key_error(exc) from None
        except asyncssh.PermissionDenied as exc:
            keys = ", ".join(t.identity_files) or "ssh-agent / ~/.ssh/id_*"
            raise AuthFailed(
                f"SSH authentication failed for {t.user}@{t.host} (tried {keys}): {exc.reason}",
                hint="run `rv init` to set up your SSH key, or check connection.user and identity_file",
            ) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise HostUnreachable(
                f"timed out connecting to {t.display} after {self.connect_timeout:g}s",
                hint="check your VPN connection and connection.hostname",
            ) from None
        except OSError as exc:
            raise HostUnreachable(
                f"cannot reach {t.display}: {exc.strerror or exc}",
                hint="check your VPN connection and connection.hostname / port",
            ) from None
        except asyncssh.Error as exc:
            raise HostUnreachable(
                f"SSH connection to {t.display} failed: {exc.reason}",
                hint="check your VPN connection and connection.hostname / port",
            ) from None
        self.connects += 1
        return holder

    async def _host_key_error(self, exc: asyncssh.HostKeyNotVerifiable) -> RemoteError:
        t = self.target
        kh = str(t.known_hosts_path)
        known = False
        if t.known_hosts_path.is_file():
            try:
                m = asyncssh.read_known_hosts(kh).match(t.host, "", t.port)
                known = bool(m[0] or m[1])
            except Exception:
                known = False
        fp: str | None = None
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(t.host, t.port, tunnel=t.proxy_jump or (), config=None), 5
            )
            if key is not None:
                fp = key.get_fingerprint()
        except Exception:
            fp = None
        port_opt = f"-p {t.port} " if t.port != 22 else ""
        keyscan = f"ssh-keyscan {port_opt}{t.host} >> {kh}"
        shown = f" (server key {fp})" if fp else ""
        if known:
            return HostKeyChanged(
                f"host key for {t.known_hosts_name} has CHANGED{shown}: it does not match {kh}",
                hint=(
                    "this can be an attack; confirm the new key with your cluster admins, then run: "
                    f"ssh-keygen -R '{t.known_hosts_name}' -f {kh} && {keyscan}"
                ),
                host=t.host, port=t.port, known_hosts=kh, fingerprint=fp,
            )
        return HostKeyUnknown(
            f"host key for {t.known_hosts_name} is not in {kh}{shown}: {exc.reason}",
            hint=f"check the fingerprint with your cluster's documentation, then run: {keyscan}",
            host=t.host, port=t.port, known_hosts=kh, fingerprint=fp,
        )

    def _on_lost(self, holder: _Conn, exc: Exception | None) -> None:
        holder.lost = True
        if holder not in self._conns:
            return  # a connection attempt that failed (reported by connect) or an already-dropped one
        self._conns.remove(holder)
        self._slot_freed.set()
        if self._closed:
            return
        if any(c.usable for c in self._conns):
            return
        reason = f"connection lost: {exc}" if exc else "connection closed by the server"
        if not self.reconnect:
            self._emit("disconnected", reason)
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._emit("reconnecting", reason)
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.5
        attempt = 0
        while not self._closed:
            attempt += 1
            try:
                holder = await self._open_connection()
            except (AuthFailed, HostKeyUnknown, HostKeyChanged) as exc:
                self._last_error = exc
                self._emit("failed", exc.message, exc)
                return
            except RemoteError as exc:
                self._last_error = exc
                if self.max_reconnect_attempts is not None and attempt >= self.max_reconnect_attempts:
                    self._emit("failed", f"gave up after {attempt} attempts: {exc.message}", exc)
                    return
                self._emit("reconnecting", f"attempt {attempt} failed ({exc.message}); retrying in {delay:g}s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            if self._closed:
                if holder.conn is not None:
                    holder.conn.close()
                return
            self._conns.append(holder)
            self._last_error = None
            self._emit("connected", f"reconnected to {self.target.display} (attempt {attempt})")
            self._slot_freed.set()
            return

    async def _wait_connected(self, deadline: float) -> None:
        if self._closed:
            raise ConnectionLost("the SSH pool is closed")
        if self._state in ("disconnected", "failed") and (
            self._reconnect_task is None or self._reconnect_task.done()
        ):
            await self.connect()
            return
        remaining = deadline - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._connected_evt.wait(), remaining)
        if self._closed:
            raise ConnectionLost("the SSH pool is closed")
        if not any(c.usable for c in self._conns):
            if self._state == "failed" and self._last_error is not None:
                raise self._last_error
            last = f" ({self._last_error.message})" if self._last_error else ""
            raise ConnectionLost(
                f"not connected to {self.target.display}: {self._state}{last}",
                hint="check your VPN connection; rv keeps retrying in the background",
            )

    # ------------------------------------------------------------------ channel slots

    async def _acquire_slot(self, deadline: float) -> _Conn:
        """Pick a connection with a free channel slot (caller holds a semaphore permit)."""
        while True:
            if self._closed:
                raise ConnectionLost("the SSH pool is closed")
            alive = [c for c in self._conns if c.usable]
            if not alive:
                await self._wait_connected(deadline)
                continue
            now = time.monotonic()
            for c in alive:
                if c.cap is not None and now >= c.cap_restore_at:
                    c.cap = c.cap + 1 if c.cap + 1 < self.max_channels else None
                    c.cap_restore_at = now + _CAP_RESTORE_S
            free = [c for c in alive if c.open < (c.cap or self.max_channels)]
            if free:
                holder = min(free, key=lambda c: c.open)
                holder.open += 1
                self.open_channels += 1
                self.channels_opened += 1
                self.max_open_channels = max(self.max_open_channels, self.open_channels)
                return holder
            if len(alive) < 1 + self.extra_connections and not self._opening_extra:
                self._opening_extra = True
                try:
                    extra = await self._open_connection()
                    if self._closed:
                        if extra.conn is not None:
                            extra.conn.close()
                    else:
                        self._conns.append(extra)
                        log.info("opened extra SSH connection #%d (channel cap reached)", len(self._conns))
                except RemoteError as exc:
                    log.warning("could not open an extra SSH connection: %s", exc)
                finally:
                    self._opening_extra = False
                continue
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def _release_slot(self, holder: _Conn) -> None:
        holder.open -= 1
        self.open_channels -= 1
        self._slot_freed.set()

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[_Conn]:
        deadline = time.monotonic() + self.reconnect_wait
        self.queued += 1
        self.max_queued = max(self.max_queued, self.queued)
        try:
            await self._sem.acquire()
        finally:
            self.queued -= 1
        try:
            holder = await self._acquire_slot(deadline)
            try:
                yield holder
            finally:
                self._release_slot(holder)
        finally:
            self._sem.release()

    # ------------------------------------------------------------------ commands

    def _wrap(self, cmd: str) -> str:
        # The login shell is the session's process-group leader (sshd setsid()s it); report its
        # pid on stderr first so a timed-out or cancelled command's whole group can be killed.
        # The newline keeps this line running even if ``cmd`` has a syntax error.
        return f"printf '%s\\n' '{self._marker}'\"$$\" >&2\n{cmd}"

    def _split_pid(self, err: bytes) -> tuple[int | None, bytes]:
        m = self._marker.encode()
        if err.startswith(m):
            line, _, rest = err.partition(b"\n")
            with contextlib.suppress(ValueError):
                return int(line[len(m):]), rest
            return None, rest
        return None, err

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _open_channel(self, holder: _Conn, opener: Callable[[], Awaitable[_T]]) -> _T:
        """Open a channel, retrying briefly when the server refuses it.

        OpenSSH frees a session slot a little after the client sees the previous channel close,
        so under churn even 8 < MaxSessions(10) channels are sometimes refused ("open failed"),
        and some servers set MaxSessions lower. On refusal this connection's cap is lowered
        (restored one step every few seconds) and the open is retried with backoff.
        """
        delay = 0.02
        deadline = time.monotonic() + _OPEN_RETRY_S
        while True:
            try:
                return await opener()
            except asyncssh.ChannelOpenError as exc:
                if not holder.usable:
                    raise _Dropped(str(exc)) from None
                if time.monotonic() >= deadline:
                    raise ConnectionLost(
                        f"the server keeps refusing new SSH channels: {exc.reason}",
                        hint="the server may limit sessions per connection (sshd MaxSessions); lower max_channels",
                    ) from None
                new_cap = max(1, holder.open - 1)
                if holder.cap is None or new_cap < holder.cap:
                    holder.cap = new_cap
                    log.info("server refused a channel with %d open; cap lowered to %d", holder.open - 1, new_cap)
                holder.cap_restore_at = time.monotonic() + _CAP_RESTORE_S
                self.channel_refusals += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except (asyncssh.Error, OSError) as exc:
                raise _Dropped(str(exc)) from None

    async def _kill_group(self, pid: int) -> None:
        """Kill a remote process group (best effort, on a fresh channel)."""
        cmd = f"kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null; true"
        with contextlib.suppress(Exception):
            raw = await self._exec(cmd, timeout=10, stdin=None)
            self.command_log.record(cmd, started_at=raw.started_at, duration=raw.duration,
                                    exit_status=raw.exit_status, kind="kill")

    async def _exec(self, cmd: str, *, timeout: float | None, stdin: str | bytes | None) -> _Raw:
        """Run ``cmd`` once on one channel; raises _Dropped, CommandTimeout, ConnectionLost."""
        async with self._channel() as holder:
            started = time.time()
            t0 = time.monotonic()
            conn = holder.conn
            assert conn is not None
            proc = await self._open_channel(holder, lambda: conn.create_process(self._wrap(cmd), encoding=None))
            pid: int | None = None

            async def io() -> tuple[bytes, bytes]:
                nonlocal pid
                if stdin is not None:
                    proc.stdin.write(stdin.encode() if isinstance(stdin, str) else stdin)
                proc.stdin.write_eof()

                async def read_err() -> bytes:
                    nonlocal pid
                    first = await proc.stderr.readline()
                    p, rest = self._split_pid(first)
                    pid = p
                    return rest + await proc.stderr.read()

                out, err = await asyncio.gather(proc.stdout.read(), read_err())
                await proc.wait()
                return out, err

            try:
                if timeout is not None and timeout > 0:
                    out, err = await asyncio.wait_for(io(), timeout)
                else:
                    out, err = await io()
            except (asyncio.TimeoutError, TimeoutError):
                with contextlib.suppress(Exception):
                    proc.terminate()  # signal request (OpenSSH >= 7.9 honours it)
                proc.close()
                if pid is not None:
                    self._spawn(self._kill_group(pid))
                raise CommandTimeout(
                    f"remote command timed out after {timeout:g}s and was killed: {_short(cmd)}",
                    hint="the cluster may be slow; retry, or raise the timeout",
                    command=cmd, timeout=float(timeout or 0),
                ) from None
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    proc.terminate()
                proc.close()
                if pid is not None:
                    self._spawn(self._kill_group(pid))
                raise
            except (asyncssh.Error, OSError) as exc:
                proc.close()
                if not holder.usable:
                    raise _Dropped(str(exc)) from None
                raise ConnectionLost(f"SSH channel failed: {exc}") from None
            duration = time.monotonic() - t0
            status = proc.exit_status
            sig = proc.exit_signal[0] if proc.exit_signal else None
            if status is None and sig is None:
                # no exit status: the connection went away (or the channel was torn down)
                await asyncio.sleep(0)
                raise _Dropped("connection closed while the command ran")
            if sig is not None:
                status = None
            return _Raw(out, err, status, sig, started, duration)

    async def run(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        stdin: str | bytes | None = None,
        idempotent: bool = True,
    ) -> CommandResult:
        """Run one POSIX-sh command line on the login node.

        ``timeout`` defaults to ``command_timeout`` (<= 0: none); on expiry the channel is
        closed, the remote process group is killed and :class:`CommandTimeout` raised.
        If the connection drops under the command it is retried once on the new connection
        when ``idempotent`` (pass False for anything with side effects, e.g. sbatch); otherwise
        :class:`ConnectionLost` is raised. ``check=True`` raises :class:`RemoteCommandFailed`
        on a non-zero exit.
        """
        t = self.command_timeout if timeout is None else timeout
        for attempt in (1, 2):
            started = time.time()
            try:
                raw = await self._exec(cmd, timeout=t, stdin=stdin)
            except _Dropped as exc:
                self.command_log.record(cmd, started_at=started, duration=time.time() - started,
                                        exit_status=None, error=f"connection lost: {exc}")
                if idempotent and attempt == 1 and self.reconnect:
                    continue
                raise ConnectionLost(
                    f"connection lost while running: {_short(cmd)}",
                    hint=("it is safe to retry" if idempotent else
                          "it may or may not have run on the cluster; check before retrying"),
                ) from None
            except CommandTimeout:
                self.command_log.record(cmd, started_at=started, duration=time.time() - started,
                                        exit_status=None, error=f"timeout after {t:g}s")
                raise
            except RemoteError as exc:
                self.command_log.record(cmd, started_at=started, duration=time.time() - started,
                                        exit_status=None, error=exc.message)
                raise
            res = CommandResult(
                cmd, raw.exit_status,
                raw.stdout.decode("utf-8", "replace"), raw.stderr.decode("utf-8", "replace"),
                raw.duration, raw.exit_signal,
            )
            self.command_log.record(cmd, started_at=raw.started_at, duration=raw.duration,
                                    exit_status=raw.exit_status,
                                    error=f"signal {raw.exit_signal}" if raw.exit_signal else None)
            if check and not res.ok:
                raise _failed(res)
            return res
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ batches

    def _batch_script(self, cmds: list[str], nonce: str) -> str:
        from rv_tui.quoting import q

        lines = []
        for i, c in enumerate(cmds):
            # each command runs in its own subshell via eval: a syntax error, `exit` or `cd`
            # in one command cannot affect the others; stdin is /dev/null so none eats input.
            lines.append(
                f"printf '\\n{nonce}:B:{i}\\n'; printf '\\n{nonce}:B:{i}\\n' >&2; "
                f"( eval {q(c)} ) </dev/null; __rv_s=$?; "
                f"printf '\\n{nonce}:E:{i}:%s\\n' \"$__rv_s\"; printf '\\n{nonce}:E:{i}\\n' >&2"
            )
        return "\n".join(lines)

    @staticmethod
    def _split_batch(out: bytes, err: bytes, n: int, nonce: str) -> list[tuple[int | None, bytes, bytes]]:
        res: list[tuple[int | None, bytes, bytes]] = []
        pos_o = pos_e = 0
        nb = nonce.encode()
        for i in range(n):
            begin = b"\n" + nb + b":B:%d\n" % i
            status: int | None = None
            so = se = b""
            b = out.find(begin, pos_o)
            if b >= 0:
                start = b + len(begin)
                end_tag = b"\n" + nb + b":E:%d:" % i
                e = out.find(end_tag, start)
                if e >= 0:
                    so = out[start:e]
                    nl = out.find(b"\n", e + len(end_tag))
                    num = out[e + len(end_tag): nl if nl >= 0 else len(out)]
                    with contextlib.suppress(ValueError):
                        status = int(num)
                    pos_o = nl + 1 if nl >= 0 else len(out)
                else:
                    so = out[start:]
                    pos_o = len(out)
            b = err.find(begin, pos_e)
            if b >= 0:
                start = b + len(begin)
                end_tag = b"\n" + nb + b":E:%d\n" % i
                e = err.find(end_tag, start)
                if e >= 0:
                    se = err[start:e]
                    pos_e = e + len(end_tag)
                else:
                    se = err[start:]
                    pos_e = len(err)
            res.append((status, so, se))
        return res

    async def run_many(
        self, cmds: list[str], *, timeout: float | None = None, idempotent: bool = True
    ) -> list[CommandResult]:
        """Run ``cmds`` in ONE remote shell invocation on one channel (one round trip).

        Each command runs in its own subshell (``( eval 'cmd' )``) with stdin from /dev/null,
        one after another; a failing command does not stop the rest. Results keep each
        command's own exit status, stdout and stderr (split with a random nonce marker).
        ``duration`` of every result is the duration of the whole batch. ``timeout`` applies to
        the whole batch. A command whose end was not seen gets ``exit_status=None``.
        """
        if not cmds:
            return []
        nonce = "RVB" + secrets.token_hex(8)
        script = self._batch_script(cmds, nonce)
        remote_cmd, stdin = script, None
        if len(script.encode()) > _MAX_INLINE_SCRIPT:
            # one argv string is capped at 128 KiB on Linux (MAX_ARG_STRLEN): feed big batches to
            # the login shell on stdin instead (each command's own stdin is still /dev/null)
            remote_cmd, stdin = 'exec "${SHELL:-/bin/sh}" -s', script
        t = self.command_timeout if timeout is None else timeout
        for attempt in (1, 2):
            started = time.time()
            try:
                raw = await self._exec(remote_cmd, timeout=t, stdin=stdin)
            except _Dropped:
                for c in cmds:
                    self.command_log.record(c, started_at=started, duration=time.time() - started,
                                            exit_status=None, error="connection lost", kind="batch")
                if idempotent and attempt == 1 and self.reconnect:
                    continue
                raise ConnectionLost(
                    f"connection lost while running a batch of {len(cmds)} commands",
                    hint=("it is safe to retry" if idempotent else
                          "some commands may have run on the cluster; check before retrying"),
                ) from None
            except RemoteError as exc:
                err = f"timeout after {t:g}s" if isinstance(exc, CommandTimeout) else exc.message
                for c in cmds:
                    self.command_log.record(c, started_at=started, duration=time.time() - started,
                                            exit_status=None, error=err, kind="batch")
                if isinstance(exc, CommandTimeout):
                    raise CommandTimeout(
                        f"batch of {len(cmds)} commands timed out after {t:g}s and was killed "
                        f"(first: {_short(cmds[0], 60)})",
                        hint=exc.hint, command=script, timeout=exc.timeout,
                    ) from None
                raise
            parts = self._split_batch(raw.stdout, raw.stderr, len(cmds), nonce)
            results = []
            for c, (status, so, se) in zip(cmds, parts, strict=True):
                r = CommandResult(c, status, so.decode("utf-8", "replace"), se.decode("utf-8", "replace"),
                                  raw.duration)
                results.append(r)
                self.command_log.record(c, started_at=raw.started_at, duration=raw.duration,
                                        exit_status=status, kind="batch",
                                        error=None if status is not None else "no exit status")
            return results
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ streams

    def stream(self, cmd: str) -> RemoteStream:
        """Stream stdout lines of a long-running command (e.g. ``tail -F``).

        Use as ``async with pool.stream(cmd) as s: async for line in s: ...``. Leaving the
        block, calling :meth:`RemoteStream.aclose`, or cancelling the consuming task kills the
        remote process group and frees the channel. No timeout applies. Lines are yielded
        without their trailing newline. A connection drop raises ConnectionLost (re-open the
        stream; it is not restarted automatically, since that would repeat output).
        """
        return RemoteStream(self, cmd)

    # ------------------------------------------------------------------ port forwarding

    async def forward_local_port(self, local_port: int, dest_host: str, dest_port: int, *,
                                 listen_host: str = "127.0.0.1") -> asyncssh.SSHListener:
        """Listen on ``listen_host:local_port`` (0 = any free port) and carry each connection to
        ``dest_host:dest_port`` as seen from the login node, over the pool's connection.  The
        listener ends with that connection (a reconnect does not restore it)."""
        await self.connect()
        holder = next((c for c in self._conns if c.usable), None)
        if holder is None or holder.conn is None:
            raise ConnectionLost(f"not connected to {self.target.display}")
        try:
            listener = await holder.conn.forward_local_port(listen_host, local_port, dest_host, dest_port)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE or "in use" in str(exc) else str(exc)
            raise RemoteError(f"cannot listen on {listen_host}:{local_port}: {why}",
                              hint="pick another local port (LOCAL_PORT:REMOTE_PORT)") from None
        self.command_log.record(f"forward {listen_host}:{listener.get_port()} -> {dest_host}:{dest_port}",
                                started_at=time.time(), duration=0.0, exit_status=0, kind="forward")
        return listener

    # ------------------------------------------------------------------ SFTP

    async def _sftp_op(self, what: str, path: str, op: Callable[[asyncssh.SFTPClient], object],
                       timeout: float | None) -> object:
        t = self.command_timeout if timeout is None else timeout
        for attempt in (1, 2):
            started = time.time()
            try:
                async with self._channel() as holder:
                    assert holder.conn is not None
                    try:
                        async def body() -> object:
                            conn = holder.conn
                            assert conn is not None
                            sftp = await self._open_channel(holder, conn.start_sftp_client)
                            async with sftp:
                                return await op(sftp)  # type: ignore[misc]

                        result = await (asyncio.wait_for(body(), t) if t and t > 0 else body())
                    except (asyncio.TimeoutError, TimeoutError):
                        raise CommandTimeout(f"SFTP {what} {path} timed out after {t:g}s", command=f"sftp {what} {path}",
                                             timeout=float(t or 0)) from None
                    except asyncssh.SFTPNoSuchFile as exc:
                        raise RemoteFileNotFound(f"remote file not found: {path} ({exc.reason})", path=path) from None
                    except asyncssh.SFTPPermissionDenied as exc:
                        raise RemoteFileError(f"permission denied: {path} ({exc.reason})",
                                              hint="check the remote file's owner and mode", path=path) from None
                    except asyncssh.SFTPError as exc:
                        if isinstance(exc, asyncssh.SFTPConnectionLost) or not holder.usable:
                            raise _Dropped(str(exc)) from None
                        raise RemoteFileError(f"SFTP {what} {path} failed: {exc.reason}", path=path) from None
                    except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as exc:
                        if not holder.usable:
                            raise _Dropped(str(exc)) from None
                        raise RemoteFileError(f"SFTP {what} {path} failed: {exc}", path=path) from None
            except _Dropped as exc:
                self.command_log.record(f"sftp {what} {path}", started_at=started,
                                        duration=time.time() - started, exit_status=None,
                                        error=f"connection lost: {exc}", kind="sftp")
                if attempt == 1 and self.reconnect:
                    continue
                raise ConnectionLost(f"connection lost during SFTP {what} {path}", hint="it is safe to retry") from None
            except RemoteError as exc:
                self.command_log.record(f"sftp {what} {path}", started_at=started,
                                        duration=time.time() - started, exit_status=None,
                                        error=exc.message, kind="sftp")
                raise
            self.command_log.record(f"sftp {what} {path}", started_at=started, duration=time.time() - started,
                                    exit_status=0, kind="sftp")
            return result
        raise AssertionError("unreachable")

    async def read_file(self, path: str, *, timeout: float | None = None) -> bytes:
        """Read a whole remote file over SFTP."""

        async def op(sftp: asyncssh.SFTPClient) -> bytes:
            async with sftp.open(path, "rb") as f:
                data = await f.read()
            return data if isinstance(data, bytes) else data.encode()

        return await self._sftp_op("read", path, op, timeout)  # type: ignore[return-value]

    async def write_file(
        self, path: str, data: str | bytes, mode: int = 0o600, *, make_parents: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Write a remote file atomically over SFTP: temp file with ``mode`` set before any data
        lands, then rename over ``path``. ``make_parents`` creates missing directories (0700)."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        directory, name = posixpath.split(path)
        tmp = posixpath.join(directory, f".{name}.rv-tmp-{secrets.token_hex(6)}")

        async def op(sftp: asyncssh.SFTPClient) -> None:
            if make_parents and directory:
                await sftp.makedirs(directory, attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True)
            f = await sftp.open(tmp, "xb", attrs=asyncssh.SFTPAttrs(permissions=mode))
            try:
                try:
                    await sftp.chmod(tmp, mode)  # umask-proof, before the data
                    await f.write(payload)
                finally:
                    await f.close()
                try:
                    await sftp.posix_rename(tmp, path)
                except asyncssh.SFTPOpUnsupported:
                    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                        await sftp.remove(path)
                    await sftp.rename(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    await sftp.remove(tmp)
                raise

        await self._sftp_op("write", path, op, timeout)


class RemoteStream:
    """Async iterator of a remote command's stdout lines; also an async context manager."""

    def __init__(self, pool: RemotePool, cmd: str) -> None:
        self.pool = pool
        self.command = cmd
        self.exit_status: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.pid: int | None = None
        self._proc: asyncssh.SSHClientProcess[str] | None = None
        self._holder: _Conn | None = None
        self._have_permit = False
        self._closed = False
        self._started_at = 0.0
        self._t0 = 0.0
        self._err_task: asyncio.Task[None] | None = None
        self._pid_evt = asyncio.Event()

    async def __aenter__(self) -> RemoteStream:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> RemoteStream:
        return self

    async def _start(self) -> None:
        if self._proc is not None or self._closed:
            return
        pool = self.pool
        deadline = time.monotonic() + pool.reconnect_wait
        await pool._sem.acquire()
        self._have_permit = True
        try:
            self._holder = await pool._acquire_slot(deadline)
            assert self._holder.conn is not None
            self._started_at = time.time()
            self._t0 = time.monotonic()
            conn = self._holder.conn
            try:
                self._proc = await pool._open_channel(
                    self._holder,
                    lambda: conn.create_process(pool._wrap(self.command), encoding="utf-8", errors="replace"),
                )
            except _Dropped as exc:
                raise ConnectionLost(f"could not start remote stream: {exc}", hint="retry") from None
        except BaseException:
            await self._release()
            raise
        self._proc.stdin.write_eof()
        self._err_task = asyncio.get_running_loop().create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self._proc is not None
        marker = self.pool._marker
        first = True
        try:
            while True:
                line = await self._proc.stderr.readline()
                if not line:
                    break
                if first and line.startswith(marker):
                    with contextlib.suppress(ValueError):
                        self.pid = int(line[len(marker):].strip())
                    self._pid_evt.set()
                    first = False
                    continue
                first = False
                self._pid_evt.set()
                self.stderr_tail.append(line.rstrip("\n"))
        except Exception:
            pass
        finally:
            self._pid_evt.set()

    async def __anext__(self) -> str:
        if self._proc is None:
            await self._start()
        if self._closed or self._proc is None:
            raise StopAsyncIteration
        try:
            line = await self._proc.stdout.readline()
        except asyncio.CancelledError:
            await asyncio.shield(self.aclose())
            raise
        except (asyncssh.Error, OSError) as exc:
            await self.aclose()
            raise ConnectionLost(f"stream interrupted: {exc}", hint="re-open the stream") from None
        if line == "":
            dropped = self._holder is not None and not self._holder.usable
            if not dropped:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._proc.wait(), 5)
                self.exit_status = self._proc.exit_status
            await self._finish(error="connection lost" if dropped else None)
            if dropped:
                raise ConnectionLost(f"connection lost while streaming: {_short(self.command)}",
                                     hint="re-open the stream once reconnected")
            raise StopAsyncIteration
        return line[:-1] if line.endswith("\n") else line

    async def _release(self) -> None:
        if self._holder is not None:
            self.pool._release_slot(self._holder)
            self._holder = None
        if self._have_permit:
            self._have_permit = False
            self.pool._sem.release()

    async def _finish(self, error: str | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._err_task is not None:
            self._err_task.cancel()
        await self._release()
        self.pool.command_log.record(self.command, started_at=self._started_at,
                                     duration=time.monotonic() - self._t0 if self._t0 else 0.0,
                                     exit_status=self.exit_status, error=error, kind="stream")

    async def aclose(self) -> None:
        """Stop the stream: signal and close the channel, kill the remote process group."""
        if self._closed:
            return
        proc = self._proc
        if proc is None:
            self._closed = True
            await self._release()
            return
        running = proc.exit_status is None and proc.exit_signal is None
        if running:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._pid_evt.wait(), 2)
            with contextlib.suppress(Exception):
                proc.terminate()
        proc.close()
        pid = self.pid
        await self._finish(error="closed by caller" if running else None)
        if running and pid is not None and self.pool.connection_count:
            await self.pool._kill_group(pid)
