"""What the config holds: the dataclasses loaded from ``config.toml`` and the key table.

Why its own module: the table (section -> key -> rule, required, secret, kind) is the one list
``rv config set``, loading and ``known_keys`` agree on; the dataclasses are what the rest of rv
reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rv_tui.config.errors import ConfigError
from rv_tui.config.validation import (
    _HOSTNAME_RE, _HOST_ALIAS_RE, _SLURM_NAME_RE, _USER_RE, _bool_rule, _email_rule, _gpu_rule,
    _local_path_rule, _path_rule, _port_rule, _str_rule, _time_rule, _url_rule,
)

# --------------------------------------------------------------------------- dataclasses


@dataclass
class ConnectionConfig:
    host: str
    user: str
    hostname: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    agent: bool = True  # keep one warm connection in a local background agent (rv_tui.agent)
    agent_idle_timeout: str = "15m"  # the agent exits after this long without a client


@dataclass
class DefaultsConfig:
    account: str | None = None
    gpu_type: str = "any"
    time: str = "2:59:00"
    partition: str | None = None
    ai_naming: bool = False
    ai_api_key: str | None = field(default=None, repr=False)


@dataclass
class PathsConfig:
    scratch: str | None = None
    # paths.home was dropped: every remote command runs in the login shell, whose own $HOME is
    # always right; a copy in the config could only go stale (see _DROPPED_KEYS)


@dataclass
class NotificationsConfig:
    enabled: bool = False
    email: str | None = None
    token: str | None = field(default=None, repr=False)
    url: str | None = None  # webhook endpoint


@dataclass
class KeepaliveConfig:
    enabled: bool = True


@dataclass
class SharedConfig:
    hf_cache: str | None = None


@dataclass
class Config:
    connection: ConnectionConfig | None = None
    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    scratch_keepalive: KeepaliveConfig = field(default_factory=KeepaliveConfig)
    shared: SharedConfig = field(default_factory=SharedConfig)
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def _user(self, what: str) -> str:
        if self.connection is None:
            raise ConfigError(
                f"no [connection] section in the config, cannot derive the {what} path",
                hint="run `rv init`",
                path=self.path,
                key="connection",
            )
        return self.connection.user

    @property
    def scratch(self) -> str:
        """Remote scratch root: ``paths.scratch`` or ``/scratch/<user>``."""
        if self.paths.scratch:
            return self.paths.scratch.rstrip("/") or "/"
        return f"/scratch/{self._user('scratch')}"

    @property
    def rv_dir(self) -> str:
        """Remote rv state directory: ``<scratch>/.rv``."""
        return f"{self.scratch}/.rv"


@dataclass(frozen=True)
class _KeySpec:
    rule: Callable[[Any], str | None]
    required: bool = False
    secret: bool = False
    kind: type = str  # used to coerce string input from `rv config set`


_SCHEMA: dict[str, dict[str, _KeySpec]] = {
    "connection": {
        "host": _KeySpec(_str_rule(_HOST_ALIAS_RE, "host alias"), required=True),
        "user": _KeySpec(_str_rule(_USER_RE, "user name"), required=True),
        "hostname": _KeySpec(_str_rule(_HOSTNAME_RE, "host name")),
        "port": _KeySpec(_port_rule, kind=int),
        "identity_file": _KeySpec(_local_path_rule),
        "known_hosts": _KeySpec(_local_path_rule),
        "agent": _KeySpec(_bool_rule, kind=bool),
        "agent_idle_timeout": _KeySpec(_time_rule),
    },
    "defaults": {
        "account": _KeySpec(_str_rule(_SLURM_NAME_RE, "Slurm account name")),
        "gpu_type": _KeySpec(_gpu_rule),
        "time": _KeySpec(_time_rule),
        "partition": _KeySpec(_str_rule(_SLURM_NAME_RE, "Slurm partition name")),
        "ai_naming": _KeySpec(_bool_rule, kind=bool),
        "ai_api_key": _KeySpec(_str_rule(), secret=True),
    },
    "paths": {
        "scratch": _KeySpec(_path_rule),
    },
    "notifications": {
        "enabled": _KeySpec(_bool_rule, kind=bool),
        "email": _KeySpec(_email_rule),
        "token": _KeySpec(_str_rule(), secret=True),
        "url": _KeySpec(_url_rule),
    },
    "scratch_keepalive": {
        "enabled": _KeySpec(_bool_rule, kind=bool),
    },
    "shared": {
        "hf_cache": _KeySpec(_path_rule),
    },
}

def _split_key(dotted: str) -> tuple[str, str]:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"{dotted!r} is not a config key (use section.key, e.g. defaults.time)",
            hint="known keys: " + ", ".join(known_keys()),
            key=dotted,
        )
    return parts[0], parts[1]


def known_keys() -> list[str]:
    """Every ``section.key`` this version understands."""
    return [f"{s}.{k}" for s, keys in _SCHEMA.items() for k in keys]


def is_secret_key(dotted: str) -> bool:
    """True for keys whose values must be masked when shown (API key, token)."""
    sec, _, key = dotted.partition(".")
    spec = _SCHEMA.get(sec, {}).get(key)
    return bool(spec and spec.secret)
