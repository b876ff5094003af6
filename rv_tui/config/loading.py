"""Loading ``config.toml`` into a :class:`~rv_tui.config.schema.Config`, with line-numbered errors.

Why its own module: a hand-edited file must give ``config.toml line 7: ...`` instead of a
traceback; keys rv no longer reads are accepted silently on load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import tomlkit.exceptions
from tomlkit.toml_document import TOMLDocument

from rv_tui.config.errors import (
    ConfigError, _HEADER_RE, _find_line, _hint_for, _norm_key, _render, _where,
)
from rv_tui.config.home import config_path
from rv_tui.config.schema import (
    Config, ConnectionConfig, DefaultsConfig, KeepaliveConfig, NotificationsConfig, PathsConfig,
    SharedConfig, _SCHEMA,
)
from rv_tui.config.validation import _plain

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
