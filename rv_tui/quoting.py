"""POSIX shell quoting for every remote command.

All remote commands reach the login node's shell as one string.  Building them only through
:func:`q` and :func:`join` keeps hostile job names, paths and values inert (tests feed these
functions ``'; rm -rf ~``, ``$(id)``, backticks and newlines).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def q(value: object) -> str:
    """Quote one word for a POSIX shell."""
    return shlex.quote(str(value))


def join(argv: Iterable[object]) -> str:
    """Quote each word and join them into one command line."""
    return " ".join(q(a) for a in argv)


def q_path(path: str) -> str:
    """Quote a remote path but let a leading ``~/`` expand to the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + q(path[2:])
    return q(path)


def env_assignment(key: str, value: str) -> str:
    """``export KEY='value'`` safe for any value (quotes, $, backticks, newlines)."""
    if not key.replace("_", "a").isalnum() or key[0].isdigit():
        raise ValueError(f"not a valid environment variable name: {key!r}")
    return f"export {key}={q(value)}"
