"""SFTP file transfer and local port forwarding over the pool's connection.

Why: secrets (env files) travel as file data, never on a command line; writes are atomic (temp
file with its mode set before any data lands, then rename) so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import posixpath
import secrets
import time
from collections.abc import Callable

import asyncssh

from rv_tui.remote.connection import _Dropped
from rv_tui.remote.errors import (
    CommandTimeout,
    ConnectionLost,
    RemoteError,
    RemoteFileError,
    RemoteFileNotFound,
)
from rv_tui.remote.streams import StreamsMixin


class FilesMixin(StreamsMixin):
    """``read_file`` / ``write_file`` / ``forward_local_port`` of a :class:`~rv_tui.remote.pool.RemotePool`."""


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
                    self.round_trips += 1
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

    async def download_file(self, path: str, local_path: str) -> int:
        """SFTP get in blocks straight to ``local_path`` (no overall timeout: size is unbounded);
        returns the bytes written."""
        import os

        async def op(sftp: asyncssh.SFTPClient) -> int:
            await sftp.get(path, local_path)
            return os.path.getsize(local_path)

        return await self._sftp_op("get", path, op, 0)  # type: ignore[return-value]

