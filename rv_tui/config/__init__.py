"""``~/.rv/config.toml``: load, validate, and edit without destroying the user's file.

Why this module exists: the config file is hand-edited by users *and* rewritten by
``rv init`` / ``rv config set``. Loading must give precise, line-numbered errors
(``config.toml line 7: defaults.time = "abc" is not a duration ...``) instead of a stack
trace, and editing must keep comments, key order and formatting (tomlkit round-trip).
A broken file is never overwritten by anything here: every write validates first and
goes through :func:`rv_tui.fsutil.atomic_write` with mode 0600.

``RV_HOME`` overrides ``~/.rv`` (tests and multiple profiles).

The package is split by what each module holds: :mod:`.home` (where), :mod:`.schema` (what:
dataclasses and the key table), :mod:`.validation` (the rule per value), :mod:`.errors`
(ConfigError and line finding), :mod:`.loading`, :mod:`.editing`, :mod:`.defaults` (``rv init``'s
file).  Everything is importable from ``rv_tui.config`` as before.
"""

from __future__ import annotations

from rv_tui.config.defaults import write_default_config
from rv_tui.config.editing import ConfigDocument
from rv_tui.config.errors import ConfigError
from rv_tui.config.home import config_path, generate_token, rv_home
from rv_tui.config.loading import load_config, parse_config_text
from rv_tui.config.schema import (
    Config, ConnectionConfig, DefaultsConfig, KeepaliveConfig, NotificationsConfig, PathsConfig,
    SharedConfig, is_secret_key, known_keys,
)
from rv_tui.config.validation import _fallback_parse_duration, _url_rule  # noqa: F401 (used by cli/init, tests)

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
    "is_secret_key",
    "known_keys",
    "load_config",
    "parse_config_text",
    "rv_home",
    "write_default_config",
]
