"""ConfigError and the line finding that makes it precise (``config.toml line 7: ...``).

Why its own module: loading and editing both report errors pointing at the user's file, so the
search for a key's line in hand-edited TOML lives once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomlkit.exceptions

from rv_tui.errors import RvError

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



def _render(value: Any, secret: bool) -> str:
    if secret:
        return "****"
    try:
        return tomlkit.item(value).as_string()
    except Exception:
        return repr(value)
