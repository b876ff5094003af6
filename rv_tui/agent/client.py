"""The CLI side of the agent: find or start it, and offer the pool's primitives over its socket.

Why this shape: :class:`AgentPool` has the remote primitives of
:class:`~rv_tui.remote.pool.RemotePool` (``connect``, ``run``, ``run_many``, ``read_file``,
``write_file``, ``stream``, ``add_listener``, ``command_log``), so
:class:`~rv_tui.cluster.ssh.SshCluster` and all the core above it work unchanged whether the
connection is in this process or in the agent. Nothing here imports asyncssh or textual: a
warm command pays for neither the import nor a handshake.

Failure rules: a socket that is not ours (owner, or the peer's uid by SO_PEERCRED) is never
used; an agent of another version or config is retired and replaced; if no agent can be started
the caller connects directly (:func:`open_agent` returns None). If the agent dies under a
request, an idempotent request is retried on a direct connection; a non-idempotent one (sbatch)
fails with :class:`~rv_tui.remote.errors.ConnectionLost` saying it may have run - never
submitted twice, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import stat
import subprocess
import sys
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

#: How long a command waits for a freshly started agent's socket before connecting directly.
START_TIMEOUT_S = 8.0
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
        started = time.time()
        try:
            value = await self._call("read_file", {"path": path, "timeout": timeout}, idempotent=True)
        except RemoteError as exc:
            self.command_log.record(f"sftp read {path}", started_at=started, duration=time.time() - started,
                                    exit_status=None, error=exc.message, kind="sftp")
            raise
        self.command_log.record(f"sftp read {path}", started_at=started, duration=time.time() - started,
                                exit_status=0, kind="sftp")
        return value if isinstance(value, bytes) else (proto.b64d(value) or b"")

    async def write_file(self, path: str, data: str | bytes, mode: int = 0o600, *,
                         make_parents: bool = False, timeout: float | None = None) -> None:
        started = time.time()
        # an atomic temp+rename write: repeating it leaves the same file, so it is idempotent
        try:
            await self._call("write_file", {"path": path, "data": proto.b64e(data), "mode": mode,
                                            "make_parents": make_parents, "timeout": timeout},
                             idempotent=True)
        except RemoteError as exc:
            self.command_log.record(f"sftp write {path}", started_at=started, duration=time.time() - started,
                                    exit_status=None, error=exc.message, kind="sftp")
            raise
        self.command_log.record(f"sftp write {path}", started_at=started, duration=time.time() - started,
                                exit_status=0, kind="sftp")

    async def download_file(self, path: str, local_path: str) -> int:
        """SFTP get to a local file; the agent (same machine, same user) writes it."""
        started = time.time()
        try:
            n = await self._call("download", {"path": path, "local_path": os.path.abspath(local_path)},
                                 idempotent=True)
        except RemoteError as exc:
            self.command_log.record(f"sftp get {path}", started_at=started, duration=time.time() - started,
                                    exit_status=None, error=exc.message, kind="sftp")
            raise
        self.command_log.record(f"sftp get {path}", started_at=started, duration=time.time() - started,
                                exit_status=0, kind="sftp")
        return int(n)

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


# --------------------------------------------------------------------------- finding / starting


def agent_enabled(config: Any) -> bool:
    """The agent is used unless ``connection.agent = false`` or ``RV_NO_AGENT=1``."""
    if os.environ.get("RV_NO_AGENT", "") not in ("", "0"):
        return False
    conn = getattr(config, "connection", None)
    return conn is not None and bool(getattr(conn, "agent", True))


async def _open(path: Path, spec: dict[str, Any], *, accept_stale: bool = False) -> AgentPool:
    """Connect to the agent at ``path`` and shake hands; raises AgentUnavailable."""
    _check_socket_file(path)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(proto.sun_path(path), limit=proto.MAX_FRAME),
            proto.HELLO_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        raise AgentUnavailable(f"cannot connect to {path}: {exc}") from None
    try:
        sock = writer.get_extra_info("socket")
        uid = proto.peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            raise AgentRefused(f"the process behind {path} runs as uid {uid}, not {os.getuid()}")
        writer.write(proto.frame({"t": "hello", "pid": os.getpid(), "version": proto.code_version()}))
        await writer.drain()
        hello = await asyncio.wait_for(proto.read_frame(reader), proto.HELLO_TIMEOUT_S)
        if not hello or hello.get("t") != "hello":
            raise AgentUnavailable("no handshake from the agent")
        if hello.get("retired"):
            raise AgentUnavailable("the agent is retiring")
    except BaseException as exc:
        writer.close()
        if isinstance(exc, AgentUnavailable):
            raise
        if isinstance(exc, (OSError, ValueError, asyncio.TimeoutError, TimeoutError)):
            raise AgentUnavailable(f"agent handshake failed: {exc}") from None
        raise
    pool = AgentPool(reader, writer, hello, spec=spec, path=path)
    stale = hello.get("version") != proto.code_version() or hello.get("key") != proto.config_key(spec)
    if stale and not accept_stale:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.retire(), proto.HELLO_TIMEOUT_S)
        await pool.close()
        raise AgentUnavailable("stale agent retired")
    return pool


@contextlib.asynccontextmanager
async def _spawn_lock(path: Path, deadline: float):
    """One spawner at a time per socket (two commands started together start one agent)."""
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AgentUnavailable("timed out waiting for another command starting the agent") from None
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)


def spawn_agent(path: Path, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start ``python -m rv_tui.agent.server`` detached (own session), its log next to the socket."""
    pkg_root = str(Path(proto.__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    logf = os.open(str(path.with_suffix(".log")), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "rv_tui.agent.server", "--socket", str(path),
             "--spec", json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf, cwd=str(path.parent),
            env=env, start_new_session=True, close_fds=True)
    finally:
        os.close(logf)


#: Set when the last open_agent call fell back, and why (``rv agent status`` and tests read it).
last_fallback: str | None = None


async def open_agent(config: Any, pool_options: dict[str, Any] | None = None, *,
                     start: bool = True) -> AgentPool | None:
    """The warm agent for this config (started in the background if needed), or None: the caller
    then connects directly, as rv did before the agent existed."""
    global last_fallback
    last_fallback = None
    if not agent_enabled(config):
        last_fallback = "disabled"
        return None
    try:
        spec = proto.agent_spec(config, pool_options)
        path = proto.agent_dir() / proto.socket_name(spec)
    except Exception as exc:  # noqa: BLE001 - no agent is never an error
        last_fallback = f"cannot prepare the agent: {exc}"
        return None
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        try:
            return await _open(path, spec)
        except AgentRefused:
            raise
        except AgentUnavailable:
            if not start:
                raise
        async with _spawn_lock(path, deadline):
            try:
                return await _open(path, spec)  # another command may have started it meanwhile
            except AgentRefused:
                raise
            except AgentUnavailable:
                pass
            proc = spawn_agent(path, spec)
            delay = 0.005
            while time.monotonic() < deadline:
                if proc.poll() is not None and not os.path.exists(path):
                    raise AgentUnavailable(f"the agent exited at start (status {proc.returncode}); "
                                           f"see {path.with_suffix('.log')}")
                try:
                    return await _open(path, spec)
                except AgentRefused:
                    raise
                except AgentUnavailable:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
            raise AgentUnavailable("the agent did not start in time")
    except AgentRefused as exc:
        last_fallback = str(exc)
        print(f"rv: warning: not using the agent: {exc}; connecting directly", file=sys.stderr)
        return None
    except (AgentUnavailable, OSError) as exc:
        last_fallback = str(exc)
        log.info("agent unavailable (%s): connecting directly", exc)
        return None


async def list_agents() -> list[tuple[Path, dict[str, Any] | str]]:
    """Every agent socket in RV_HOME/agent with its stats (or why it could not be asked)."""
    out: list[tuple[Path, dict[str, Any] | str]] = []
    d = proto.agent_dir()
    for path in sorted(d.glob("*.sock")):
        try:
            pool = await _open(path, {"connection": {"host": "", "user": ""}}, accept_stale=True)
        except AgentUnavailable as exc:
            out.append((path, str(exc)))
            continue
        try:
            out.append((path, await pool.stats()))
        except Exception as exc:  # noqa: BLE001
            out.append((path, str(exc)))
        finally:
            await pool.close()
    return out


async def stop_agents() -> list[tuple[Path, int | str]]:
    """Ask every agent in RV_HOME/agent to exit; (socket, pid) or (socket, why not)."""
    out: list[tuple[Path, int | str]] = []
    for path in sorted(proto.agent_dir().glob("*.sock")):
        try:
            pool = await _open(path, {"connection": {"host": "", "user": ""}}, accept_stale=True)
        except AgentUnavailable as exc:
            out.append((path, str(exc)))
            continue
        try:
            await pool.stop()
            out.append((path, pool.agent_pid))
        except Exception as exc:  # noqa: BLE001
            out.append((path, str(exc)))
        finally:
            await pool.close()
    return out
