"""Where rv keeps its local state: ``RV_HOME`` or ``~/.rv``, and the config file in it.

Why its own module: the request store, the env store and the agent all need the directory, and
none of them should have to import the config's schema or TOML handling to find it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

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
