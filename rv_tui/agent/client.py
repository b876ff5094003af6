"""The CLI side of the agent: find or start it, and offer the pool's primitives over its socket.

Why this shape: :class:`AgentPool` has the remote primitives of
:class:`~rv_tui.remote.pool.RemotePool` (``connect``, ``run``, ``run_many``, ``read_file``,
``write_file``, ``stream``, ``add_listener``, ``command_log``), so
:class:`~rv_tui.cluster.ssh.SshCluster` and all the core above it work unchanged whether the
connection is in this process or in the agent. Nothing here imports asyncssh or textual: a
warm command pays for neither the import nor a handshake.

Failure rules: a socket that is not ours (owner, or the peer's uid by SO_PEERCRED) is never
used; an agent of another version or config is retired and replaced; if no agent can be started
the caller connects directly (:func:`rv_tui.agent.launcher.open_agent` returns None). If the agent dies under a
request, an idempotent request is retried on a direct connection; a non-idempotent one (sbatch)
fails with :class:`~rv_tui.remote.errors.ConnectionLost` saying it may have run - never
submitted twice, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rv_tui.agent import protocol as proto
from rv_tui.remote.commandlog import CommandLog
from rv_tui.remote.errors import ConnectionLost, RemoteError
from rv_tui.remote.result import CommandResult, ConnectionEvent, ConnState, _failed, _short

log = logging.getLogger("rv_tui.agent")

#: The pool's default command timeout, and the slack for a reconnect, before a request to the
#: agent is abandoned as unanswered.
DEFAULT_TIMEOUT_S = 60.0
AGENT_SLACK_S = 45.0


class AgentUnavailable(Exception):
    """Internal: this socket cannot be used (absent, refused, stale, not ours)."""


class _AgentGone(Exception):
    """Internal: the agent's connection ended while a request was outstanding."""


def _check_socket_file(path: Path) -> None:
    """Refuse a socket file that is not a socket or is owned by someone else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise AgentUnavailable("no agent") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise AgentUnavailable(f"{path} is not a socket")
    if st.st_uid != os.getuid():
        raise AgentRefused(f"agent socket {path} is owned by uid {st.st_uid}, not {os.getuid()}")


class AgentRefused(AgentUnavailable):
    """The socket (or the process behind it) belongs to another user: never talk to it."""


class AgentPool:
    """A :class:`~rv_tui.remote.pool.RemotePool` look-alike whose work is done by the agent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 hello: dict[str, Any], *, spec: dict[str, Any], path: Path) -> None:
        self._reader = reader
        self._writer = writer
        self.hello = hello
        self.spec = spec
        self.path = path
        self.agent_pid: int = int(hello.get("pid") or 0)
        self.command_log = CommandLog()
        self.display = _display(spec)
        self._state: ConnState = hello.get("state") or "disconnected"
        self._listeners: list[Callable[[ConnectionEvent], None]] = []
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._lines: dict[int, asyncio.Queue[str | None]] = {}
        self._ids = itertools.count(1)
        self._dead: str | None = None
        self._direct: Any = None  # a RemotePool, made only if the agent dies
        self._direct_lock = asyncio.Lock()
        self._closed = False
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        self.round_trips_seen = 0

    # ------------------------------------------------------------------ pool-like surface

    @property
    def state(self) -> ConnState:
        return self._direct.state if self._direct is not None else self._state

    @property
    def via_agent(self) -> bool:
        return self._dead is None

    def add_listener(self, callback: Callable[[ConnectionEvent], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        if self._direct is not None:
            self._direct.add_listener(callback)

        def remove() -> None:
            self.remove_listener(callback)

        return remove

    def remove_listener(self, callback: Callable[[ConnectionEvent], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)
        if self._direct is not None:
            self._direct.remove_listener(callback)

    async def __aenter__(self) -> AgentPool:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Make sure the agent's pool is connected; its typed errors (host key, auth) re-raise here."""
        await self._call("connect", {}, idempotent=True)

    async def close(self) -> None:
        """Leave the agent (it keeps the connection for the next command)."""
        if self._closed:
            return
        self._closed = True
        self._reader_task.cancel()
        with contextlib.suppress(BaseException):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._direct is not None:
            with contextlib.suppress(Exception):
                await self._direct.close()

    async def run(self, cmd: str, *, timeout: float | None = None, check: bool = False,
                  stdin: str | bytes | None = None, idempotent: bool = True) -> CommandResult:
        started = time.time()
        try:
            value = await self._call("run", {"cmd": cmd, "timeout": timeout, "stdin": proto.b64e(stdin),
                                             "idempotent": idempotent}, idempotent=idempotent,
                                     what=f"running: {_short(cmd)}")
        except RemoteError as exc:
            self.command_log.record(cmd, started_at=started, duration=time.time() - started,
                                    exit_status=None, error=exc.message)
            raise
        res = proto.result_from_wire(value) if isinstance(value, dict) else value
        self.command_log.record(cmd, started_at=started, duration=res.duration,
                                exit_status=res.exit_status,
                                error=f"signal {res.exit_signal}" if res.exit_signal else None)
        if check and not res.ok:
            raise _failed(res)
        return res

    async def run_many(self, cmds: list[str], *, timeout: float | None = None, idempotent: bool = True,
                       files: list[tuple[str, bytes | str, int]] | None = None,
                       cache_ttl: float | None = None) -> list[CommandResult]:
        if not cmds and not files:
            return []
        started = time.time()
        args = {"cmds": list(cmds), "timeout": timeout, "idempotent": idempotent,
                "cache_ttl": cache_ttl,
                "files": [{"path": p, "data": proto.b64e(d), "mode": m} for p, d, m in files or ()]}
        try:
            value = await self._call("run_many", args, idempotent=idempotent,
                                     what=f"running a batch of {len(cmds)} commands")
        except RemoteError as exc:
            for c in cmds:
                self.command_log.record(c, started_at=started, duration=time.time() - started,
                                        exit_status=None, error=exc.message, kind="batch")
            raise
        results = [proto.result_from_wire(v) if isinstance(v, dict) else v for v in value]
        for p, d, _m in files or ():
            self.command_log.record(f"write {p} ({len(d)} bytes)", started_at=started,
                                    duration=time.time() - started, exit_status=0, kind="write")
        for r in results:
            self.command_log.record(r.command, started_at=started, duration=r.duration,
                                    exit_status=r.exit_status, kind="batch",
                                    error=None if r.exit_status is not None else "no exit status")
        return results

    async def read_file(self, path: str, *, timeout: float | None = None) -> bytes:
        value = await self._sftp_call(f"sftp read {path}", "read_file", {"path": path, "timeout": timeout})
        return value if isinstance(value, bytes) else (proto.b64d(value) or b"")

    async def write_file(self, path: str, data: str | bytes, mode: int = 0o600, *,
                         make_parents: bool = False, timeout: float | None = None) -> None:
        # an atomic temp+rename write: repeating it leaves the same file, so it is idempotent
        await self._sftp_call(f"sftp write {path}", "write_file", {
            "path": path, "data": proto.b64e(data), "mode": mode, "make_parents": make_parents,
            "timeout": timeout})

    async def download_file(self, path: str, local_path: str) -> int:
        """SFTP get to a local file; the agent (same machine, same user) writes it."""
        n = await self._sftp_call(f"sftp get {path}", "download",
                                  {"path": path, "local_path": os.path.abspath(local_path)})
        return int(n)

    async def _sftp_call(self, label: str, op: str, args: dict[str, Any]) -> Any:
        """One idempotent file request to the agent, recorded in the command log either way."""
        started = time.time()
        try:
            value = await self._call(op, args, idempotent=True)
        except RemoteError as exc:
            self.command_log.record(label, started_at=started, duration=time.time() - started,
                                    exit_status=None, error=exc.message, kind="sftp")
            raise
        self.command_log.record(label, started_at=started, duration=time.time() - started,
                                exit_status=0, kind="sftp")
        return value

    def stream(self, cmd: str) -> AgentStream:
        return AgentStream(self, cmd)

    async def forward_local_port(self, local_port: int, dest_host: str, dest_port: int, *,
                                 listen_host: str = "127.0.0.1") -> Any:
        """Port forwards carry this process's sockets, so they use a direct connection."""
        direct = await self._direct_pool()
        return await direct.forward_local_port(local_port, dest_host, dest_port, listen_host=listen_host)

    async def stats(self) -> dict[str, Any]:
        """The agent's counters (round trips, connects, clients, idle time)."""
        return await self._call("stats", {}, idempotent=True, direct_ok=False)

    async def retire(self) -> None:
        await self._call("retire", {}, idempotent=True, direct_ok=False)

    async def stop(self) -> None:
        await self._call("stop", {}, idempotent=True, direct_ok=False)

    # ------------------------------------------------------------------ plumbing

    def _send(self, msg: dict[str, Any]) -> None:
        if self._writer.is_closing():
            raise _AgentGone("the agent connection is closed")
        self._writer.write(proto.frame(msg))

    async def _call(self, op: str, args: dict[str, Any], *, idempotent: bool, what: str = "",
                    direct_ok: bool = True, on_line: asyncio.Queue[str | None] | None = None) -> Any:
        # a stuck (not dead) agent must not hang the command: the pool's own timeouts plus
        # a reconnect's worth of slack, then give up (streams have no limit)
        t = args.get("timeout")
        limit = None if on_line is not None or op in ("download",) else (
            (float(t) if t and float(t) > 0 else DEFAULT_TIMEOUT_S) + AGENT_SLACK_S)
        sent = False
        if self._dead is None:
            rid = next(self._ids)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            if on_line is not None:
                self._lines[rid] = on_line
            try:
                try:
                    self._send({"t": "req", "id": rid, "op": op, "args": args})
                    sent = True
                    await self._writer.drain()
                except (_AgentGone, ConnectionError, OSError) as exc:
                    self._mark_dead(f"agent connection failed: {exc}")
                else:
                    try:
                        return await asyncio.wait_for(asyncio.shield(fut), limit)
                    except (asyncio.TimeoutError, TimeoutError):
                        with contextlib.suppress(Exception):
                            self._send({"t": "cancel", "id": rid})
                        raise ConnectionLost(
                            f"the rv agent (pid {self.agent_pid}) did not answer within {limit:g}s "
                            f"while {what or op}" + ("" if idempotent else
                                                     "; the command may or may not have run on the cluster"),
                            hint="`rv agent stop` ends it; the next command starts a fresh one") from None
                    except asyncio.CancelledError:
                        with contextlib.suppress(Exception):
                            self._send({"t": "cancel", "id": rid})
                        raise
                    except _AgentGone:
                        pass
            finally:
                self._pending.pop(rid, None)
                self._lines.pop(rid, None)
        if not direct_ok:
            raise ConnectionLost(f"the rv agent (pid {self.agent_pid}) is not running",
                                 hint="`rv agent status` shows the agents; any rv command starts one")
        if sent and not idempotent:
            raise ConnectionLost(
                f"the rv agent (pid {self.agent_pid}) stopped while {what or op}; "
                "the command may or may not have run on the cluster (a submission may have happened)",
                hint="check with `rv ps` before retrying; rv did not retry it, so nothing was submitted twice")
        if on_line is not None:
            raise ConnectionLost(f"the rv agent stopped while streaming: {what or op}",
                                 hint="re-open the stream")
        direct = await self._direct_pool()
        return await _direct_call(direct, op, args)

    def _mark_dead(self, why: str) -> None:
        if self._dead is not None:
            return
        self._dead = why
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_AgentGone(why))
        for q in self._lines.values():
            q.put_nowait(None)
        if not self._closed:
            self._emit(ConnectionEvent("reconnecting", f"{why}; connecting directly", time.time()))

    def _emit(self, ev: ConnectionEvent) -> None:
        self._state = ev.state
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                log.exception("connection listener failed")

    async def _read_loop(self) -> None:
        why = "the rv agent closed the connection"
        try:
            while True:
                msg = await proto.read_frame(self._reader)
                if msg is None:
                    break
                t = msg.get("t")
                if t == "res":
                    fut = self._pending.get(int(msg["id"]))
                    if fut is None or fut.done():
                        continue
                    if msg.get("ok"):
                        fut.set_result(msg.get("value"))
                    else:
                        fut.set_exception(proto.error_from_wire(msg.get("error") or {}))
                elif t == "line":
                    q = self._lines.get(int(msg["id"]))
                    if q is not None:
                        q.put_nowait(msg.get("line", ""))
                elif t == "event":
                    self._emit(proto.event_from_wire(msg))
        except asyncio.CancelledError:
            why = "closed"
            raise
        except Exception as exc:  # noqa: BLE001 - a garbled frame ends the session like EOF
            why = f"bad message from the rv agent: {exc}"
        finally:
            self._mark_dead(why)

    async def _direct_pool(self) -> Any:
        """A pool in this process (imports asyncssh): the fallback when the agent is gone."""
        async with self._direct_lock:
            if self._direct is None:
                self._direct = make_direct_pool(self.spec)
                for cb in self._listeners:
                    self._direct.add_listener(cb)
                self._direct.command_log = self.command_log
            await self._direct.connect()
            return self._direct


class AgentStream:
    """:class:`~rv_tui.remote.pool.RemoteStream` look-alike: stdout lines relayed by the agent."""

    def __init__(self, pool: AgentPool, cmd: str) -> None:
        self.pool = pool
        self.command = cmd
        self.exit_status: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[Any] | None = None
        self._closed = False
        self._started_at = 0.0

    async def __aenter__(self) -> AgentStream:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AgentStream:
        return self

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._started_at = time.time()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> Any:
        try:
            return await self.pool._call("stream", {"cmd": self.command}, idempotent=True,
                                         what=_short(self.command), on_line=self._queue)
        finally:
            self._queue.put_nowait(None)

    async def __anext__(self) -> str:
        self._start()
        if self._closed:
            raise StopAsyncIteration
        line = await self._queue.get()
        if line is not None:
            return line
        assert self._task is not None
        try:
            value = await self._task
        finally:
            self._closed = True
        if isinstance(value, dict):
            self.exit_status = value.get("exit_status")
            self.stderr_tail.extend(value.get("stderr_tail") or ())
        self.pool.command_log.record(self.command, started_at=self._started_at,
                                     duration=time.time() - self._started_at,
                                     exit_status=self.exit_status, kind="stream")
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the stream: the agent cancels it, which kills the remote process group."""
        if self._closed and (self._task is None or self._task.done()):
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def _direct_call(pool: Any, op: str, a: dict[str, Any]) -> Any:
    if op == "connect":
        await pool.connect()
        return {"state": pool.state}
    if op == "run":
        return await pool.run(a["cmd"], timeout=a.get("timeout"), stdin=proto.b64d(a.get("stdin")),
                              idempotent=bool(a.get("idempotent", True)))
    if op == "run_many":
        files = [(f["path"], proto.b64d(f["data"]) or b"", f["mode"]) for f in a.get("files") or ()]
        return await pool.run_many(a["cmds"], timeout=a.get("timeout"),
                                   idempotent=bool(a.get("idempotent", True)), files=files or None)
    if op == "read_file":
        return await pool.read_file(a["path"], timeout=a.get("timeout"))
    if op == "write_file":
        await pool.write_file(a["path"], proto.b64d(a["data"]) or b"", a.get("mode", 0o600),
                              make_parents=bool(a.get("make_parents")), timeout=a.get("timeout"))
        return None
    if op == "download":
        return await pool.download_file(a["path"], a["local_path"])
    raise ConnectionLost(f"the rv agent is not running ({op})")


def make_direct_pool(spec: dict[str, Any]) -> Any:
    """The RemotePool the agent would have built (imports asyncssh)."""
    from rv_tui.config import ConnectionConfig
    from rv_tui.remote.pool import RemotePool
    from rv_tui.remote.target import SshTarget

    return RemotePool(SshTarget.from_config(ConnectionConfig(**spec["connection"])), **spec.get("pool", {}))


def _display(spec: dict[str, Any]) -> str:
    c = spec["connection"]
    host = c.get("hostname") or c["host"]
    port = f":{c['port']}" if c.get("port") not in (None, 22) else ""
    return f"{c['user']}@{host}{port}"
