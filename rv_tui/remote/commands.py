"""Commands and batches: one command per channel, or many as ONE remote shell invocation.

Why: a round trip is what a user on a VPN pays for; ``run_many`` runs independent commands in
one invocation and splits their exit status/stdout/stderr back apart with a random nonce, and
every command reports its login shell's pid first so a timeout or cancel kills the whole
remote process group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import posixpath
import secrets
import time

import asyncssh

from rv_tui.remote.connection import _Dropped, _Raw
from rv_tui.remote.errors import CommandTimeout, ConnectionLost, RemoteError, RemoteFileError
from rv_tui.remote.result import CommandResult, _failed, _short, _tail
from rv_tui.remote.slots import SlotsMixin

_MAX_INLINE_SCRIPT = 64 * 1024


class CommandsMixin(SlotsMixin):
    """``run`` / ``run_many`` of a :class:`~rv_tui.remote.pool.RemotePool`."""

    command_timeout: float
    _marker: str
    _batch_cache: dict[tuple[str, ...], tuple[float, list[CommandResult]]]

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
            self.round_trips += 1
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

    def _files_script(self, files: list[tuple[str, bytes | str, int]], nonce: str) -> str:
        """Shell lines writing each file atomically from base64 here-documents (data travels on
        stdin, never on a command line): temp file created 0600 (umask 077), mode set, rename."""
        from rv_tui.quoting import q

        lines = []
        for i, (path, data, mode) in enumerate(files):
            payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            directory, name = posixpath.split(path)
            tmp = posixpath.join(directory, f".{name}.rv-tmp-{secrets.token_hex(6)}")
            b64 = base64.encodebytes(payload).decode("ascii")
            mkdir = f"mkdir -p -- {q(directory)} && " if directory else ""
            lines.append(
                f"( umask 077 && {mkdir}base64 -d > {q(tmp)} <<'{nonce}F'\n{b64}{nonce}F\n) && "
                f"chmod {mode:o} {q(tmp)} && mv -f -- {q(tmp)} {q(path)} || "
                f"{{ rm -f -- {q(tmp)}; printf '\\n{nonce}:F:{i}\\n' >&2; exit 97; }}"
            )
        return "\n".join(lines)

    async def run_many(
        self, cmds: list[str], *, timeout: float | None = None, idempotent: bool = True,
        files: list[tuple[str, bytes | str, int]] | None = None, cache_ttl: float | None = None,
    ) -> list[CommandResult]:
        """Run ``cmds`` in ONE remote shell invocation on one channel (one round trip).

        Each command runs in its own subshell (``( eval 'cmd' )``) with stdin from /dev/null,
        one after another; a failing command does not stop the rest. Results keep each
        command's own exit status, stdout and stderr (split with a random nonce marker).
        ``duration`` of every result is the duration of the whole batch. ``timeout`` applies to
        the whole batch. A command whose end was not seen gets ``exit_status=None``.

        ``files`` (path, data, mode) are written first in the same invocation (atomically, parents
        made 0700; the data goes on stdin, so secrets never reach a command line or the log); if
        one cannot be written no command runs and :class:`RemoteFileError` is raised.
        ``cache_ttl`` reuses the results of the same idempotent batch for that many seconds
        (probes between ``rv up --dry-run`` and ``rv run``, or two panes asking at once).
        """
        if not cmds and not files:
            return []
        key = tuple(cmds)
        if cache_ttl and idempotent and not files:
            hit = self._batch_cache.get(key)
            if hit is not None and time.monotonic() - hit[0] <= cache_ttl:
                return hit[1]
        results = await self._run_many(cmds, timeout=timeout, idempotent=idempotent, files=files or [])
        if cache_ttl and idempotent and not files:
            now = time.monotonic()
            self._batch_cache = {k: v for k, v in self._batch_cache.items() if now - v[0] <= 600}
            self._batch_cache[key] = (now, results)
        return results

    async def _run_many(self, cmds: list[str], *, timeout: float | None, idempotent: bool,
                        files: list[tuple[str, bytes | str, int]]) -> list[CommandResult]:
        nonce = "RVB" + secrets.token_hex(8)
        script = self._batch_script(cmds, nonce)
        if files:
            script = self._files_script(files, nonce) + "\n" + script
        remote_cmd, stdin = script, None
        if files or len(script.encode()) > _MAX_INLINE_SCRIPT:
            # one argv string is capped at 128 KiB on Linux (MAX_ARG_STRLEN): feed big batches to
            # the login shell on stdin instead (each command's own stdin is still /dev/null);
            # file data always goes this way (a command line is visible in ps)
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
            for i, (path, data, _mode) in enumerate(files):
                failed_file = f"\n{nonce}:F:{i}\n".encode() in raw.stderr
                self.command_log.record(f"write {path} ({len(data)} bytes)", started_at=raw.started_at,
                                        duration=raw.duration, exit_status=1 if failed_file else 0,
                                        kind="write", error="write failed" if failed_file else None)
                if failed_file:
                    why = _tail(raw.stderr.decode("utf-8", "replace").split(f"\n{nonce}:F:{i}\n")[0])
                    raise RemoteFileError(f"could not write {path}: {why or 'write failed'}",
                                          hint="check the remote directory's owner, mode and free space",
                                          path=path)
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

