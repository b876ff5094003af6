"""Find, start, replace and stop the rv agent (the client side; no asyncssh here).

Why apart from :mod:`rv_tui.agent.client`: this is the policy (one agent per configured cluster,
one spawner at a time, stale agents retired, foreign sockets refused, fall back to a direct
connection), the client module is the mechanism (a pool look-alike over the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rv_tui.agent import protocol as proto
from rv_tui.agent.client import AgentPool, AgentRefused, AgentUnavailable, _check_socket_file

log = logging.getLogger("rv_tui.agent")

#: How long a command waits for a freshly started agent's socket before connecting directly.
START_TIMEOUT_S = 8.0



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
