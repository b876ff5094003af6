"""Editing ``config.toml`` without destroying it: ``rv config set/get`` through tomlkit.

Why its own module: a round trip keeps the user's comments, key order and formatting; every
write validates the whole result first and goes through ``atomic_write`` (0600).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import tomlkit.exceptions
from tomlkit.toml_document import TOMLDocument

from rv_tui.config.errors import ConfigError, _find_line, _hint_for, _render
from rv_tui.config.home import config_path
from rv_tui.config.loading import _DROPPED_KEYS, _build_config, _parse_text
from rv_tui.config.schema import Config, _KeySpec, _SCHEMA, _split_key, known_keys
from rv_tui.config.validation import _plain
from rv_tui.fsutil import atomic_write

# --------------------------------------------------------------------------- editing


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
