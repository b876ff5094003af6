"""Wire format and local paths shared by the agent and its clients (no asyncssh here).

Frames are a 4-byte big-endian length and a UTF-8 JSON object; bytes travel base64-encoded.
The handshake carries the code version and a key of everything the agent's pool was built from
(the [connection] config, ~/.ssh/config, SSH_AUTH_SOCK, pool options), so a client replaces an
agent left over from an older rv or an edited config instead of silently using it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import rv_tui
from rv_tui.errors import RvError
from rv_tui.remote import errors as remote_errors
from rv_tui.remote.result import CommandResult, ConnectionEvent

#: Largest frame accepted (a read_file of a big log tail, a big batch): 256 MiB.
MAX_FRAME = 256 * 1024 * 1024
#: Seconds a client waits for the agent's hello before treating the socket as unusable.
HELLO_TIMEOUT_S = 3.0
#: Default idle timeout when the config does not say (connection.agent_idle_timeout).
DEFAULT_IDLE_S = 15 * 60

_HDR = struct.Struct(">I")
_PKG = Path(rv_tui.__file__).resolve().parent


def code_version() -> str:
    """``rv_tui.__version__`` plus a fingerprint of the agent and pool source files (an upgrade or
    an edited checkout changes it; stat only, no reading)."""
    h = hashlib.sha256()
    for sub in ("agent", "remote"):
        for p in sorted((_PKG / sub).glob("*.py")):
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return f"{rv_tui.__version__}+{h.hexdigest()[:12]}"


def agent_dir() -> Path:
    """``RV_HOME/agent``, created 0700 (and tightened to 0700 if it was looser)."""
    from rv_tui.config import rv_home

    d = rv_home() / "agent"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = d.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d


def idle_seconds(text: str | None) -> int:
    if not text:
        return DEFAULT_IDLE_S
    from rv_tui.durations import parse_duration

    return int(parse_duration(text))


def agent_spec(config: Any, pool_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the agent needs to build the same pool the command would build directly."""
    conn = config.connection
    return {
        "connection": {k: getattr(conn, k) for k in
                       ("host", "user", "hostname", "port", "identity_file", "known_hosts")},
        "idle_timeout": idle_seconds(getattr(conn, "agent_idle_timeout", None)),
        "pool": dict(pool_options or {}),
        "ssh_auth_sock": os.environ.get("SSH_AUTH_SOCK") or None,
    }


def config_key(spec: dict[str, Any]) -> str:
    """Hash of the spec and of ~/.ssh/config's stat (the agent resolves the target from it)."""
    ssh_cfg = Path("~/.ssh/config").expanduser()
    try:
        st = ssh_cfg.stat()
        cfg_stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        cfg_stamp = "-"
    raw = json.dumps(spec, sort_keys=True) + "|" + cfg_stamp
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def socket_name(spec: dict[str, Any]) -> str:
    """One agent per configured cluster: named after the [connection] host and user."""
    c = spec["connection"]
    ident = hashlib.sha256(f"{c['host']}|{c['user']}".encode()).hexdigest()[:10]
    return f"{ident}.sock"


def sun_path(path: Path) -> str:
    """An AF_UNIX address for ``path``: sockaddr_un holds ~107 bytes, and pytest's or a deep
    RV_HOME can be longer; on Linux ``/proc/self/fd/<dir fd>/<name>`` reaches it anyway."""
    s = str(path)
    if len(s.encode()) < 100:
        return s
    if Path("/proc/self/fd").is_dir():
        fd = _dir_fd(path.parent)
        return f"/proc/self/fd/{fd}/{path.name}"
    raise OSError(f"agent socket path too long for AF_UNIX: {s}")


_DIR_FDS: dict[str, int] = {}


def _dir_fd(d: Path) -> int:
    key = str(d)
    fd = _DIR_FDS.get(key)
    if fd is None:
        fd = os.open(key, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        _DIR_FDS[key] = fd
    return fd


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process on the other end of a Unix socket (None where unsupported)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid


# --------------------------------------------------------------------------- frames


def frame(msg: dict[str, Any]) -> bytes:
    data = json.dumps(msg, separators=(",", ":")).encode()
    return _HDR.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at end of stream (the peer went away)."""
    try:
        hdr = await reader.readexactly(_HDR.size)
        (n,) = _HDR.unpack(hdr)
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes is too large")
        data = await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError("frame is not an object")
    return msg


def b64e(data: bytes | str | None) -> str | None:
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def b64d(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


# --------------------------------------------------------------------------- values


def result_to_wire(r: CommandResult) -> dict[str, Any]:
    return {"command": r.command, "exit_status": r.exit_status, "stdout": r.stdout,
            "stderr": r.stderr, "duration": r.duration, "exit_signal": r.exit_signal}


def result_from_wire(d: dict[str, Any]) -> CommandResult:
    return CommandResult(d["command"], d["exit_status"], d["stdout"], d["stderr"],
                         float(d["duration"]), d.get("exit_signal"))


_ERROR_ATTRS = ("host", "port", "known_hosts", "fingerprint", "command", "exit_status", "stderr",
                "path", "timeout")


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """A typed error as data: its class name, message, hint and the attributes callers read."""
    if isinstance(exc, RvError):
        attrs = {a: getattr(exc, a) for a in _ERROR_ATTRS if hasattr(exc, a)}
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint,
                "attrs": {k: v for k, v in attrs.items() if isinstance(v, (str, int, float, type(None)))}}
    return {"type": "", "message": f"{type(exc).__name__}: {exc}", "hint": None, "attrs": {}}


def error_from_wire(d: dict[str, Any]) -> RvError:
    """The same exception class the pool raised (RemoteError for anything unknown)."""
    cls = getattr(remote_errors, d.get("type") or "", None)
    if not (isinstance(cls, type) and issubclass(cls, RvError)):
        cls = remote_errors.RemoteError
    exc = cls.__new__(cls)
    RvError.__init__(exc, d.get("message") or "remote error", d.get("hint"))
    for k, v in (d.get("attrs") or {}).items():
        if k in _ERROR_ATTRS:
            setattr(exc, k, v)
    return exc


def event_to_wire(ev: ConnectionEvent) -> dict[str, Any]:
    return {"t": "event", "state": ev.state, "detail": ev.detail, "at": ev.at,
            "error": error_to_wire(ev.error) if ev.error is not None else None}


def event_from_wire(d: dict[str, Any]) -> ConnectionEvent:
    err = d.get("error")
    return ConnectionEvent(d["state"], d.get("detail", ""), float(d.get("at") or 0.0),
                           error_from_wire(err) if err else None)
