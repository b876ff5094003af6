"""Channel slots: keep open channels per connection under sshd's MaxSessions.

Why: the 11th channel on one OpenSSH connection is refused ("open failed"); callers queue FIFO
on a semaphore, pick the least busy connection (opening an extra one when allowed), and a
refused open lowers that connection's cap for a while instead of failing the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncssh

from rv_tui.remote.connection import ConnectionMixin, _Conn, _Dropped
from rv_tui.remote.errors import ConnectionLost, RemoteError

log = logging.getLogger("rv_tui.remote.pool")

_OPEN_RETRY_S = 10.0  # how long to keep retrying a refused channel open
_CAP_RESTORE_S = 5.0  # after a refusal, raise the lowered cap by one this often
_T = TypeVar("_T")


class SlotsMixin(ConnectionMixin):
    """Channel accounting of a :class:`~rv_tui.remote.pool.RemotePool`."""

    max_channels: int
    extra_connections: int
    _sem: asyncio.Semaphore
    _opening_extra: bool
    channel_refusals: int

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

