"""``~/.rv/config.toml``: load, validate, and edit without destroying the user's file.

Why this module exists: the config file is hand-edited by users *and* rewritten by
``rv init`` / ``rv config set``. Loading must give precise, line-numbered errors
(``config.toml line 7: defaults.time = "abc" is not a duration ...``) instead of a stack
trace, and editing must keep comments, key order and formatting (tomlkit round-trip).
A broken file is never overwritten by anything here: every write validates first and
goes through :func:`rv_tui.fsutil.atomic_write` with mode 0600.

``RV_HOME`` overrides ``~/.rv`` (tests and multiple profiles).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.toml_document import TOMLDocument

from rv_tui.errors import RvError
from rv_tui.fsutil import atomic_write

__all__ = [
    "Config",
    "ConfigDocument",
    "ConfigError",
    "ConnectionConfig",
    "DefaultsConfig",
    "KeepaliveConfig",
    "NotificationsConfig",
    "PathsConfig",
    "SharedConfig",
    "config_path",
    "generate_token",
    "load_config",
    "rv_home",
    "write_default_config",
]


# --------------------------------------------------------------------------- paths


def rv_home() -> Path:
    """Local state directory: ``$RV_HOME`` if set, else ``~/.rv``."""
    env = os.environ.get("RV_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".rv"


def config_path() -> Path:
    """Path of the config file (``<rv_home>/config.toml``)."""
    return rv_home() / "config.toml"


def generate_token() -> str:
    """A fresh notification/webhook token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- errors


class ConfigError(RvError):
    """The config file (or a value for it) is wrong; carries where and what."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        path: Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.path = path
        self.line = line
        self.key = key


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


# --------------------------------------------------------------------------- validation

_DURATION_HINT = "use 2h, 30m, 1.5d, HH:MM:SS"


def _fallback_parse_duration(text: str) -> int:
    """Minimal duration parser used only if rv_tui.durations is unavailable."""
    t = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", t, re.IGNORECASE)
    if m:
        secs = round(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()])
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", t)
        if not m:
            raise ValueError(text)
        d, a, b, c = m.groups()
        nums = [int(x) for x in (a, b, c) if x is not None]
        if len(nums) == 3:
            h, mi, s = nums
        elif len(nums) == 2:
            h, mi, s = (nums[0], nums[1], 0) if d else (0, nums[0], nums[1])
        else:
            h, mi, s = (nums[0], 0, 0) if d else (0, nums[0], 0)
        if mi > 59 or s > 59:
            raise ValueError(text)
        secs = int(d or 0) * 86400 + h * 3600 + mi * 60 + s
    if secs <= 0:
        raise ValueError(text)
    return secs


def _parse_duration(text: str) -> int:
    try:
        from rv_tui.durations import parse_duration
    except Exception:  # pragma: no cover - only while durations.py is missing
        return _fallback_parse_duration(text)
    return parse_duration(text)


_FALLBACK_GPU_TYPES = {"a100", "a100_80", "a100_40", "a6000", "a40", "h200", "h100", "v100", "rtx3090", "mig"}


def _check_gpu_type(value: str) -> str | None:
    if value.strip().lower() == "any":
        return None
    try:
        from rv_tui.gpus import resolve_gpu_type
    except Exception:  # pragma: no cover - only while gpus.py is missing
        if value.strip().lower() in _FALLBACK_GPU_TYPES:
            return None
        return "is not a known GPU type (use any, " + ", ".join(sorted(_FALLBACK_GPU_TYPES)) + ")"
    try:
        resolve_gpu_type(value)
    except RvError as exc:
        return "is not a known GPU type" + (f" ({exc.hint})" if exc.hint else "")
    except Exception:
        return "is not a known GPU type"
    return None


_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
_HOST_ALIAS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]*$")
_SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def _str_rule(pattern: re.Pattern[str] | None = None, what: str = "") -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return "must be a string"
        if not v.strip():
            return "must not be empty"
        if pattern is not None and not pattern.match(v):
            return f"is not a valid {what}"
        return None

    return check


def _path_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not v.startswith("/"):
        return "must be an absolute path (starting with /)"
    if "\n" in v or "\0" in v:
        return "must not contain newlines"
    return None


def _local_path_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not v.strip():
        return "must not be empty"
    return None


def _bool_rule(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _port_rule(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return "must be an integer port number (1-65535)"
    if not 1 <= v <= 65535:
        return "is not a valid port (use 1-65535)"
    return None


def _time_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string duration ({_DURATION_HINT})"
    try:
        _parse_duration(v)
    except (RvError, ValueError):
        return f"is not a duration ({_DURATION_HINT})"
    return None


def _gpu_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    return _check_gpu_type(v)


def _email_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
        return "is not an email address"
    return None


def _url_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not re.fullmatch(r"https?://\S+", v):
        return "is not an http(s) URL"
    return None


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


def _plain(value: Any) -> Any:
    """tomlkit items -> plain Python values."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    return value


def _render(value: Any, secret: bool) -> str:
    if secret:
        return "****"
    try:
        return tomlkit.item(value).as_string()
    except Exception:
        return repr(value)


# --------------------------------------------------------------------------- line finding

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _norm_key(k: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in k.split("."))


def _find_line(text: str | None, section: str, key: str | None = None) -> int | None:
    """1-based line of ``[section]`` (key None) or of ``key`` inside it, by scanning the text."""
    if not text:
        return None
    current: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER_RE.match(line)
        if m:
            current = _norm_key(m.group(1))
            if key is None and current == section:
                return n
            continue
        km = re.match(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=", line)
        if not km:
            continue
        k = _norm_key(km.group(1))
        full = f"{current}.{k}" if current else k
        if key is None:
            if full.startswith(section + "."):
                return n
        elif full == f"{section}.{key}":
            return n
    return None


# --------------------------------------------------------------------------- building


def _where(path: Path | None, line: int | None) -> str:
    name = path.name if path is not None else "config.toml"
    return f"{name} line {line}" if line else name


def _hint_for(path: Path | None) -> str:
    return f"edit {path}" if path is not None else "edit ~/.rv/config.toml"


def _value_error(
    section: str, key: str, value: Any, reason: str, *, path: Path | None, text: str | None
) -> ConfigError:
    spec = _SCHEMA.get(section, {}).get(key)
    line = _find_line(text, section, key)
    shown = _render(value, bool(spec and spec.secret))
    return ConfigError(
        f"{_where(path, line)}: {section}.{key} = {shown} {reason}",
        hint=_hint_for(path),
        path=path,
        line=line,
        key=f"{section}.{key}",
    )


#: Keys older configs (and the seeds' example) carry that rv no longer reads: accepted silently
#: on load so those files keep working, refused by ``rv config set`` with the reason.
_DROPPED_KEYS: dict[str, str] = {
    "paths.home": "rv uses the login node's own $HOME (remote commands run in your login shell)",
}


def _build_config(data: dict[str, Any], *, path: Path | None, text: str | None) -> Config:
    """Validate plain data (from TOML) and build a :class:`Config`; raise the first error."""
    warnings: list[str] = []
    sections: dict[str, dict[str, Any]] = {}
    for sec_name, sec_val in data.items():
        if sec_name not in _SCHEMA:
            line = _find_line(text, sec_name) or _find_line_top(text, sec_name)
            warnings.append(f"{_where(path, line)}: unknown section or key {sec_name!r} (ignored)")
            continue
        if not isinstance(sec_val, dict):
            line = _find_line(text, sec_name) or _find_line_top(text, sec_name)
            raise ConfigError(
                f"{_where(path, line)}: {sec_name} must be a table ([{sec_name}])",
                hint=_hint_for(path),
                path=path,
                line=line,
                key=sec_name,
            )
        values: dict[str, Any] = {}
        for key, raw in sec_val.items():
            spec = _SCHEMA[sec_name].get(key)
            if spec is None and f"{sec_name}.{key}" in _DROPPED_KEYS:
                continue
            if spec is None:
                line = _find_line(text, sec_name, key)
                warnings.append(f"{_where(path, line)}: unknown key {sec_name}.{key} (ignored)")
                continue
            value = _plain(raw)
            reason = spec.rule(value)
            if reason:
                raise _value_error(sec_name, key, value, reason, path=path, text=text)
            values[key] = value
        sections[sec_name] = values

    connection: ConnectionConfig | None = None
    if "connection" in sections:
        conn = sections["connection"]
        for req in ("host", "user"):
            if req not in conn:
                line = _find_line(text, "connection")
                raise ConfigError(
                    f"{_where(path, line)}: connection.{req} is required",
                    hint=_hint_for(path) + " or run `rv init`",
                    path=path,
                    line=line,
                    key=f"connection.{req}",
                )
        connection = ConnectionConfig(**conn)
    d = sections.get("defaults", {})
    if "gpu_type" in d and d["gpu_type"].strip().lower() == "any":
        d = {**d, "gpu_type": "any"}
    return Config(
        connection=connection,
        defaults=DefaultsConfig(**d),
        paths=PathsConfig(**sections.get("paths", {})),
        notifications=NotificationsConfig(**sections.get("notifications", {})),
        scratch_keepalive=KeepaliveConfig(**sections.get("scratch_keepalive", {})),
        shared=SharedConfig(**sections.get("shared", {})),
        path=path,
        warnings=warnings,
    )


def _find_line_top(text: str | None, key: str) -> int | None:
    if not text:
        return None
    for n, line in enumerate(text.splitlines(), 1):
        if _HEADER_RE.match(line):
            return None
        km = re.match(r"^\s*([A-Za-z0-9_\-\"']+)\s*=", line)
        if km and _norm_key(km.group(1)) == key:
            return n
    return None


def _parse_text(text: str, path: Path | None) -> TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        line = getattr(exc, "line", None)
        col = getattr(exc, "col", None)
        # tomlkit's message already ends with "at line L col C"; keep only the reason
        reason = re.sub(r"\s+at line \d+ col \d+$", "", str(exc))
        pos = f" col {col}" if col else ""
        raise ConfigError(
            f"{_where(path, line)}{pos}: TOML syntax error: {reason}",
            hint=_hint_for(path),
            path=path,
            line=line,
        ) from None
    except Exception as exc:  # tomlkit raises a few non-ParseError errors (e.g. duplicate keys)
        raise ConfigError(
            f"{_where(path, None)}: TOML error: {exc}",
            hint=_hint_for(path),
            path=path,
        ) from None


def parse_config_text(text: str, path: Path | None = None) -> Config:
    """Parse and validate config text (no file access)."""
    doc = _parse_text(text, path)
    return _build_config(doc.unwrap(), path=path, text=text)


def load_config(path: str | os.PathLike[str] | None = None) -> Config | None:
    """Load ``path`` (default :func:`config_path`); ``None`` if the file does not exist.

    Raises :class:`ConfigError` (with ``line`` and ``key``) for syntax errors and bad values.
    Unknown keys are not errors; they are listed in ``Config.warnings``.
    """
    p = Path(path) if path is not None else config_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p.name}: not UTF-8 text ({exc.reason})", hint=_hint_for(p), path=p) from None
    except IsADirectoryError:
        raise ConfigError(f"cannot read {p}: it is a directory, not a file", path=p,
                          hint=f"move it away (mv {p} {p}.dir) and run `rv init`") from None
    except PermissionError:
        raise ConfigError(f"cannot read {p}: permission denied", path=p,
                          hint=f"make it readable by you: chmod 700 {p.parent} && chmod 600 {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}", hint="check the file permissions", path=p) from None
    return parse_config_text(text, p)


# --------------------------------------------------------------------------- editing


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


def _coerce(spec: _KeySpec, value: Any) -> Any:
    """Accept strings for typed keys (values typed on a command line)."""
    if not isinstance(value, str):
        return value
    if spec.kind is bool:
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
    elif spec.kind is int:
        if re.fullmatch(r"\s*\d+\s*", value):
            return int(value)
    return value


class ConfigDocument:
    """A config file held as a tomlkit document: edits keep comments, order and formatting.

    ``set`` validates the single value before touching the document; ``save`` validates the
    whole document and refuses to write an invalid one, so a broken file is never produced.
    """

    def __init__(self, doc: TOMLDocument, path: Path | None) -> None:
        self._doc = doc
        self.path = path

    # construction
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ConfigDocument:
        """Parse an existing file (syntax errors raise ConfigError; values are checked on save)."""
        p = Path(path) if path is not None else config_path()
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p} does not exist", hint="run `rv init`", path=p) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {p}: {exc}", hint=_hint_for(p), path=p) from None
        return cls(_parse_text(text, p), p)

    @classmethod
    def new(cls, path: str | os.PathLike[str] | None = None) -> ConfigDocument:
        p = Path(path) if path is not None else config_path()
        doc = tomlkit.document()
        doc.add(tomlkit.comment("rv configuration; see `rv config --help`. Edits keep comments."))
        return cls(doc, p)

    # access
    def as_string(self) -> str:
        return self._doc.as_string()

    def get(self, dotted_key: str, default: Any = None) -> Any:
        sec, key = _split_key(dotted_key)
        table = self._doc.get(sec)
        if not isinstance(table, dict) or key not in table:
            return default
        return _plain(table[key])

    def set(self, dotted_key: str, value: Any) -> None:
        """Validate and set ``section.key``; on error raise ConfigError and change nothing."""
        sec, key = _split_key(dotted_key)
        spec = _SCHEMA.get(sec, {}).get(key)
        if spec is None and dotted_key in _DROPPED_KEYS:
            raise ConfigError(f"{dotted_key} is no longer a config key: {_DROPPED_KEYS[dotted_key]}",
                              hint=f"remove it: rv config unset {dotted_key}", path=self.path,
                              key=dotted_key)
        if spec is None:
            raise ConfigError(
                f"unknown config key {dotted_key!r}",
                hint="known keys: " + ", ".join(known_keys()),
                path=self.path,
                key=dotted_key,
            )
        if value is None:
            self.unset(dotted_key)
            return
        value = _coerce(spec, value)
        reason = spec.rule(value)
        if reason:
            line = _find_line(self.as_string(), sec, key)
            raise ConfigError(
                f"{dotted_key} = {_render(value, spec.secret)} {reason}",
                hint=None,
                path=self.path,
                line=line,
                key=dotted_key,
            )
        table = self._doc.get(sec)
        if table is None:
            new_table = tomlkit.table()
            new_table[key] = value
            self._doc[sec] = new_table
            return
        if not isinstance(table, dict):
            raise ConfigError(
                f"{sec} is not a table in {self.path}, cannot set {dotted_key}",
                hint=_hint_for(self.path),
                path=self.path,
                key=sec,
            )
        table[key] = value

    def unset(self, dotted_key: str) -> bool:
        """Remove ``section.key``; returns whether it was present."""
        sec, key = _split_key(dotted_key)
        table = self._doc.get(sec)
        if isinstance(table, dict) and key in table:
            del table[key]
            return True
        return False

    def to_config(self) -> Config:
        """Validate the whole document and return it as a :class:`Config`."""
        text = self.as_string()
        return _build_config(self._doc.unwrap(), path=self.path, text=text)

    def save(self, path: str | os.PathLike[str] | None = None) -> Config:
        """Validate, then write atomically with mode 0600. Returns the validated Config."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ConfigError("no path to save the config to")
        text = self.as_string()
        # re-parse the exact text we are about to write: what lands on disk must load
        cfg = _build_config(_parse_text(text, target).unwrap(), path=target, text=text)
        atomic_write(target, text, mode=0o600)
        self.path = target
        return cfg


def _existing_is_broken(p: Path) -> ConfigError | None:
    try:
        load_config(p)
    except ConfigError as exc:
        return exc
    return None


def write_default_config(
    user: str,
    *,
    host: str = "rv-hpc",
    hostname: str | None = "login.hpc.virginia.edu",
    port: int | None = None,
    identity_file: str | None = None,
    account: str | None = None,
    gpu_type: str = "any",
    time: str = "2:59:00",
    partition: str | None = None,
    scratch: str | None = None,
    notifications: bool = False,
    email: str | None = None,
    token: str | None = None,
    hf_cache: str | None = None,
    path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Config:
    """Write a fresh, commented config (for ``rv init``) and return it.

    Refuses when the file exists unless ``overwrite`` is set, and never overwrites a file that
    does not load (the user's hand edits might be in it): that raises ConfigError.
    Every value is validated before anything is written.
    """
    p = Path(path) if path is not None else config_path()
    if p.exists():
        if not overwrite:
            raise ConfigError(
                f"{p} already exists",
                hint="use `rv config set KEY VALUE` to change it",
                path=p,
            )
        broken = _existing_is_broken(p)
        if broken is not None:
            raise ConfigError(
                f"refusing to overwrite {p}: it does not load ({broken.message})",
                hint=f"fix it or move it away (mv {p} {p}.bak)",
                path=p,
                line=broken.line,
                key=broken.key,
            )
    doc = tomlkit.document()
    doc.add(tomlkit.comment("rv configuration (written by rv init). Comments and order are kept"))
    doc.add(tomlkit.comment("when rv edits this file; `rv config set KEY VALUE` validates values."))
    doc.add(tomlkit.nl())
    cd = ConfigDocument(doc, p)

    conn = tomlkit.table()
    doc["connection"] = conn
    cd.set("connection.host", host)
    conn.item("host").comment("ssh alias (from ~/.ssh/config or used as-is)")
    cd.set("connection.user", user)
    if hostname:
        cd.set("connection.hostname", hostname)
    if port is not None:
        cd.set("connection.port", port)
    if identity_file:
        cd.set("connection.identity_file", identity_file)

    defaults = tomlkit.table()
    doc["defaults"] = defaults
    if account:
        cd.set("defaults.account", account)
    cd.set("defaults.gpu_type", gpu_type)
    cd.set("defaults.time", time)
    defaults.item("time").comment("default walltime: 2h, 30m, 1.5d, HH:MM:SS")
    if partition:
        cd.set("defaults.partition", partition)
    cd.set("defaults.ai_naming", False)

    paths = tomlkit.table()
    doc["paths"] = paths
    cd.set("paths.scratch", scratch or f"/scratch/{user}")

    notif = tomlkit.table()
    doc["notifications"] = notif
    cd.set("notifications.enabled", notifications)
    if email:
        cd.set("notifications.email", email)
    if notifications or token:
        cd.set("notifications.token", token or generate_token())
        notif.item("token").comment("auto-generated by rv init")

    ka = tomlkit.table()
    doc["scratch_keepalive"] = ka
    cd.set("scratch_keepalive.enabled", True)
    ka.item("enabled").comment("touch scratch files daily against the 90-day purge")

    if hf_cache:
        cd.set("shared.hf_cache", hf_cache)
    return cd.save()
