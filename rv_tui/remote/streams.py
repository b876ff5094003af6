"""Streams: stdout lines of a long-running remote command as they arrive (``tail -F``).

Why: log following holds a channel for minutes; closing, cancelling or a dropped connection must
free the slot and kill the remote process group, never leave a ``tail`` behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import asyncssh

from rv_tui.remote.commands import CommandsMixin
from rv_tui.remote.connection import _Conn, _Dropped
from rv_tui.remote.errors import ConnectionLost
from rv_tui.remote.result import _short


class StreamsMixin(CommandsMixin):
    """``stream`` of a :class:`~rv_tui.remote.pool.RemotePool`."""


    def stream(self, cmd: str) -> RemoteStream:
        """Stream stdout lines of a long-running command (e.g. ``tail -F``).

        Use as ``async with pool.stream(cmd) as s: async for line in s: ...``. Leaving the
        block, calling :meth:`RemoteStream.aclose`, or cancelling the consuming task kills the
        remote process group and frees the channel. No timeout applies. Lines are yielded
        without their trailing newline. A connection drop raises ConnectionLost (re-open the
        stream; it is not restarted automatically, since that would repeat output).
        """
        return RemoteStream(self, cmd)



class RemoteStream:
    """Async iterator of a remote command's stdout lines; also an async context manager."""

    def __init__(self, pool: StreamsMixin, cmd: str) -> None:
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
            pool.round_trips += 1
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
