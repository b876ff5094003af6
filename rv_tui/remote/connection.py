"""Connection lifecycle: connect, host-key and auth errors, drop detection, reconnect, events.

Why: every other part of the pool only asks "give me a usable connection"; how it is opened,
how a refused or changed host key is explained, and how a drop turns into a background
reconnect with backoff and :class:`ConnectionEvent` s lives here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import asyncssh

from rv_tui.errors import RvError
from rv_tui.remote.commandlog import CommandLog
from rv_tui.remote.errors import (
    AuthFailed,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    RemoteError,
)
from rv_tui.remote.result import ConnectionEvent, ConnState
from rv_tui.remote.target import SshTarget

log = logging.getLogger("rv_tui.remote.pool")


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
    def __init__(self, pool: "ConnectionMixin", holder: _Conn) -> None:
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



class ConnectionMixin:
    """Connection state of a :class:`~rv_tui.remote.pool.RemotePool` (attributes set there)."""

    target: SshTarget
    connect_timeout: float
    keepalive_interval: float
    command_log: CommandLog
    reconnect: bool
    max_reconnect_delay: float
    max_reconnect_attempts: int | None
    reconnect_wait: float
    _conns: list[_Conn]
    _state: ConnState
    _listeners: list[Callable[[ConnectionEvent], None]]
    _connected_evt: asyncio.Event
    _slot_freed: asyncio.Event
    _connect_lock: asyncio.Lock
    _reconnect_task: asyncio.Task[None] | None
    _bg: set[asyncio.Task[object]]
    _closed: bool
    _last_error: RemoteError | None
    _agent: asyncssh.SSHAgentClient | None
    connects: int
    open_channels: int
    max_open_channels: int
    max_queued: int
    queued: int
    channels_opened: int
    round_trips: int

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
        self.round_trips = 0

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

    async def __aenter__(self) -> Self:
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

