"""The agent process: owns one :class:`~rv_tui.remote.pool.RemotePool` and serves it on a socket.

Why a separate process: the connection (and the 0.3 s asyncssh import) outlives each CLI command,
so the second and later commands start with a warm connection. It listens on
``RV_HOME/agent/<id>.sock`` (directory 0700, socket 0600) and serves only peers with its own uid
(SO_PEERCRED), keeps reconnecting as the pool does, tells every client about connection events,
and exits after ``idle_timeout`` seconds without a client. ``retire`` (a client saw a stale
version or config) unlinks the socket at once so a fresh agent can bind it; this one exits when
its last client (say, a running TUI) leaves.

Started by :func:`rv_tui.agent.launcher.open_agent` as ``python -m rv_tui.agent.server``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rv_tui.agent import protocol as proto
from rv_tui.config import ConnectionConfig
from rv_tui.errors import RvError
from rv_tui.remote.pool import RemotePool
from rv_tui.remote.target import SshTarget

log = logging.getLogger("rv_tui.agent")

#: How long a cached probe batch (run_many with ``cache_ttl``) is reused at most.
MAX_CACHE_TTL_S = 600.0


class _Client:
    """One connected rv command (or TUI)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int | None) -> None:
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.closed = False
        self.active = False  # sent real work (status/stop alone do not keep the agent alive)

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(proto.frame(msg))

    async def flush(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()


class Agent:
    """Serve ``pool`` on ``path`` until idle for ``idle_timeout`` seconds (or stopped)."""

    def __init__(self, path: Path, spec: dict[str, Any]) -> None:
        self.path = path
        self.spec = spec
        self.version = proto.code_version()
        self.key = proto.config_key(spec)
        self.idle_timeout = float(spec.get("idle_timeout") or proto.DEFAULT_IDLE_S)
        target = SshTarget.from_config(ConnectionConfig(**spec["connection"]))
        self.pool = RemotePool(target, **spec.get("pool", {}))
        self.clients: set[_Client] = set()
        self.started = time.time()
        self.last_activity = time.monotonic()
        self.requests = 0
        self.retired = False
        self._stop = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._cache: dict[tuple[str, ...], tuple[float, list[dict[str, Any]]]] = {}
        self.pool.add_listener(self._on_event)

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> socket.socket:
        """Bind the socket 0600 (umask, then chmod); refuse to steal a live agent's socket."""
        d = self.path.parent
        os.chdir(d)  # bind by relative name: sockaddr_un is short, RV_HOME may not be
        name = self.path.name
        if os.path.lexists(name):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1)
                probe.connect(name)
            except OSError:
                os.unlink(name)  # stale socket of a dead agent
            else:
                probe.close()
                raise SystemExit("another agent is serving this socket")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(name)
        finally:
            os.umask(old)
        os.chmod(name, 0o600)
        st = os.stat(name)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(64)
        sock.setblocking(False)
        return sock

    async def serve(self) -> None:
        sock = self._bind()
        self._server = await asyncio.start_unix_server(self._handle, sock=sock)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        log.info("agent %s serving %s (pid %d, idle timeout %gs)", self.version, self.path,
                 os.getpid(), self.idle_timeout)
        warm = loop.create_task(self._warm())
        try:
            await self._watch_idle()
        finally:
            warm.cancel()
            self._unlink_own_socket()
            self._server.close()
            for c in list(self.clients):
                for t in c.tasks.values():
                    t.cancel()
                c.closed = True
                c.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
            log.info("agent stopped")

    async def _warm(self) -> None:
        """Connect before the first request arrives (errors are reported to the client that asks)."""
        with contextlib.suppress(Exception):
            await self.pool.connect()

    async def _watch_idle(self) -> None:
        step = max(0.2, min(5.0, self.idle_timeout / 5))
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._stop.wait(), step)
            if any(c.active for c in self.clients):
                continue
            if self.retired:
                break
            if time.monotonic() - self.last_activity >= self.idle_timeout:
                log.info("idle for %gs: exiting", self.idle_timeout)
                break

    def _unlink_own_socket(self) -> None:
        """Remove the socket only if it is still ours (a successor may have bound the name)."""
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)

    def retire(self) -> None:
        if self.retired:
            return
        self.retired = True
        self._unlink_own_socket()
        if self._server is not None:
            self._server.close()
        log.info("retired (stale version or config); exiting when the last client leaves")

    # ------------------------------------------------------------------ clients

    def _on_event(self, ev: Any) -> None:
        msg = proto.event_to_wire(ev)
        for c in list(self.clients):
            c.send(msg)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            uid = proto.peer_uid(sock) if sock is not None else None
        except OSError:
            uid = -1
        if uid is not None and uid != os.getuid():
            log.warning("refused a client with uid %s (agent uid %d)", uid, os.getuid())
            writer.close()
            return
        try:
            hello = await asyncio.wait_for(proto.read_frame(reader), proto.HELLO_TIMEOUT_S)
        except (asyncio.TimeoutError, TimeoutError, ValueError):
            writer.close()
            return
        if not hello or hello.get("t") != "hello":
            writer.close()
            return
        client = _Client(reader, writer, hello.get("pid"))
        client.send({"t": "hello", "version": self.version, "key": self.key, "pid": os.getpid(),
                     "state": self.pool.state, "retired": self.retired})
        await client.flush()
        if self.retired:
            writer.close()
            return
        self.clients.add(client)
        try:
            while True:
                try:
                    msg = await proto.read_frame(reader)
                except ValueError:
                    break
                if msg is None:
                    break
                kind = msg.get("t")
                if kind == "req" and msg.get("op") not in ("stats", "stop", "retire"):
                    client.active = True
                    self.last_activity = time.monotonic()
                if kind == "req":
                    rid = int(msg["id"])
                    task = asyncio.get_running_loop().create_task(self._serve_request(client, rid, msg))
                    client.tasks[rid] = task
                    task.add_done_callback(lambda _t, rid=rid: client.tasks.pop(rid, None))
                elif kind == "cancel":
                    task = client.tasks.get(int(msg["id"]))
                    if task is not None:
                        task.cancel()
        finally:
            # the command went away (exited, Ctrl-C): stop what it left running, as a dropped
            # SSH connection would have (the pool kills the remote process group)
            client.closed = True
            for t in list(client.tasks.values()):
                t.cancel()
            self.clients.discard(client)
            if client.active:
                self.last_activity = time.monotonic()
            writer.close()

    async def _serve_request(self, client: _Client, rid: int, msg: dict[str, Any]) -> None:
        self.requests += 1
        op = msg.get("op")
        args = msg.get("args") or {}
        try:
            value = await self._dispatch(client, rid, op, args)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            if not isinstance(exc, RvError):
                log.exception("request %s failed", op)
            client.send({"t": "res", "id": rid, "ok": False, "error": proto.error_to_wire(exc)})
        else:
            client.send({"t": "res", "id": rid, "ok": True, "value": value})
        await client.flush()

    async def _dispatch(self, client: _Client, rid: int, op: Any, a: dict[str, Any]) -> Any:
        pool = self.pool
        if op == "connect":
            await pool.connect()
            return {"state": pool.state}
        if op == "run":
            r = await pool.run(a["cmd"], timeout=a.get("timeout"), stdin=proto.b64d(a.get("stdin")),
                               idempotent=bool(a.get("idempotent", True)))
            return proto.result_to_wire(r)
        if op == "run_many":
            return await self._run_many(a)
        if op == "read_file":
            return proto.b64e(await pool.read_file(a["path"], timeout=a.get("timeout")))
        if op == "write_file":
            await pool.write_file(a["path"], proto.b64d(a["data"]) or b"", int(a.get("mode", 0o600)),
                                  make_parents=bool(a.get("make_parents")), timeout=a.get("timeout"))
            return None
        if op == "download":
            # the agent runs on this machine as this user: it writes the local file itself
            return await pool.download_file(a["path"], a["local_path"])
        if op == "stream":
            async with pool.stream(a["cmd"]) as s:
                async for line in s:
                    client.send({"t": "line", "id": rid, "line": line})
                    await client.flush()  # back-pressure: a slow reader slows the tail, not memory
                return {"exit_status": s.exit_status, "stderr_tail": list(s.stderr_tail)}
        if op == "stats":
            return self.stats()
        if op == "retire":
            self.retire()
            return None
        if op == "stop":
            self._stop.set()
            return None
        raise RvError(f"unknown agent request {op!r}")

    async def _run_many(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        cmds = [str(c) for c in a["cmds"]]
        ttl = min(float(a.get("cache_ttl") or 0), MAX_CACHE_TTL_S)
        key = tuple(cmds)
        now = time.monotonic()
        if ttl > 0:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] <= ttl:
                return hit[1]
        rs = await self.pool.run_many(cmds, timeout=a.get("timeout"),
                                      idempotent=bool(a.get("idempotent", True)),
                                      files=_files_from_wire(a.get("files")))
        out = [proto.result_to_wire(r) for r in rs]
        if ttl > 0:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] <= MAX_CACHE_TTL_S}
            self._cache[key] = (now, out)
        return out

    def stats(self) -> dict[str, Any]:
        p = self.pool
        return {"pid": os.getpid(), "version": self.version, "key": self.key,
                "target": p.target.display, "state": p.state, "started": self.started,
                "idle_timeout": self.idle_timeout,
                "clients": sum(1 for c in self.clients if c.active),
                "idle_for": (0.0 if any(c.active for c in self.clients)
                             else time.monotonic() - self.last_activity),
                "requests": self.requests, "round_trips": p.round_trips, "connects": p.connects,
                "open_channels": p.open_channels, "retired": self.retired,
                "socket": str(self.path)}


def _files_from_wire(files: Any) -> list[tuple[str, bytes, int]] | None:
    if not files:
        return None
    return [(str(f["path"]), proto.b64d(f["data"]) or b"", int(f.get("mode", 0o600))) for f in files]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rv_tui.agent.server")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--spec", required=True, help="JSON spec (see rv_tui.agent.protocol.agent_spec)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s agent[%(process)d] %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # it logs every command line at INFO
    spec = json.loads(args.spec)
    if spec.get("ssh_auth_sock"):
        os.environ["SSH_AUTH_SOCK"] = spec["ssh_auth_sock"]
    agent = Agent(Path(args.socket), spec)
    try:
        asyncio.run(agent.serve())
    except SystemExit as exc:
        log.info("not started: %s", exc)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
