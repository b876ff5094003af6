"""Where to connect: the rv config's [connection] merged with ~/.ssh/config.

Users already describe the cluster in ``~/.ssh/config`` (Host alias, HostName, Port, User,
IdentityFile, ProxyJump); ``rv`` must honour that instead of asking again. asyncssh's own
OpenSSH-config parser does the lookup, so Match/Include/wildcards behave like ``ssh``.
Explicit values in ``config.toml`` win over ``~/.ssh/config``; ssh-agent keys are used
whenever ``SSH_AUTH_SOCK`` is set; host keys are always checked (default
``~/.ssh/known_hosts``), never accepted silently.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rv_tui.config import ConnectionConfig

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def default_ssh_config_path() -> Path:
    return Path("~/.ssh/config").expanduser()


@dataclass(frozen=True)
class SshTarget:
    """A fully resolved SSH destination."""

    host: str  # network host name or address actually connected to
    port: int = 22
    user: str = ""
    identity_files: tuple[str, ...] = ()  # empty: ssh-agent + default ~/.ssh/id_* keys
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    proxy_jump: str | None = None  # "[user@]host[:port][,...]" as in OpenSSH
    alias: str | None = None  # the Host alias the user named, if different from host
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def display(self) -> str:
        """``user@host:port`` (plus alias) for messages."""
        base = f"{self.user}@{self.host}" if self.user else self.host
        if self.port != 22:
            base += f":{self.port}"
        if self.alias and self.alias != self.host:
            base = f"{self.alias} ({base})"
        return base

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser()

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts (``[host]:port`` for non-22 ports)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @classmethod
    def from_config(
        cls,
        conn: ConnectionConfig,
        *,
        ssh_config: str | os.PathLike[str] | None | bool = True,
    ) -> SshTarget:
        """Resolve ``conn`` against ``~/.ssh/config`` (or ``ssh_config``; False/None: skip it)."""
        looked: dict[str, Any] = {}
        if ssh_config is not False and ssh_config is not None:
            path = default_ssh_config_path() if ssh_config is True else Path(ssh_config).expanduser()
            looked = lookup_ssh_config(conn.host, path, user=conn.user, port=conn.port)
        host = conn.hostname or looked.get("Hostname") or conn.host
        port = conn.port or looked.get("Port") or 22
        user = conn.user or looked.get("User") or getpass.getuser()
        if conn.identity_file:
            identity: tuple[str, ...] = (str(Path(conn.identity_file).expanduser()),)
        else:
            identity = tuple(
                str(Path(p).expanduser()) for p in (looked.get("IdentityFile") or ()) if Path(p).expanduser().exists()
            )
        kh = conn.known_hosts
        if not kh:
            khs = looked.get("UserKnownHostsFile") or ()
            kh = khs[0] if khs else DEFAULT_KNOWN_HOSTS
        proxy = looked.get("ProxyJump")
        if isinstance(proxy, str) and proxy.lower() == "none":
            proxy = None
        return cls(
            host=str(host),
            port=int(port),
            user=str(user),
            identity_files=identity,
            known_hosts=str(kh),
            proxy_jump=proxy or None,
            alias=conn.host if conn.host != host else None,
        )


def lookup_ssh_config(alias: str, path: Path, *, user: str | None = None, port: int | None = None) -> dict[str, Any]:
    """Values ``ssh`` would use for ``alias`` from an OpenSSH config file (asyncssh's parser)."""
    if not path.is_file() or not os.access(path, os.R_OK):
        return {}
    from asyncssh.config import SSHClientConfig

    try:
        local_user = getpass.getuser()
    except Exception:
        local_user = "root"
    cfg = SSHClientConfig.load(None, [str(path)], False, False, False, local_user, user or (), alias, port or ())
    out: dict[str, Any] = {}
    for key in ("Hostname", "Port", "User", "IdentityFile", "ProxyJump", "UserKnownHostsFile"):
        value = cfg.get(key)
        if value not in (None, (), []):
            out[key] = value
    return out
