"""asyncssh worker pool: one connection per cluster, channel cap, batches, streams, SFTP,
reconnect, typed errors and a command log. See :mod:`rv_tui.remote.pool`.

The names are loaded lazily (PEP 562): importing ``rv_tui.remote.errors`` or
``rv_tui.remote.result`` must not import asyncssh (0.26 s), because the rv agent's client side
(:mod:`rv_tui.agent.client`) uses them in every CLI command.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CommandLog": "commandlog", "CommandRecord": "commandlog", "redact": "commandlog",
    "AuthFailed": "errors", "CommandTimeout": "errors", "ConnectionLost": "errors",
    "HostKeyChanged": "errors", "HostKeyError": "errors", "HostKeyUnknown": "errors",
    "HostUnreachable": "errors", "RemoteCommandFailed": "errors", "RemoteError": "errors",
    "RemoteFileError": "errors", "RemoteFileNotFound": "errors",
    "CommandResult": "result", "ConnectionEvent": "result",
    "RemotePool": "pool", "RemoteStream": "pool",
    "SshTarget": "target",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rv_tui.remote' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rv_tui.remote.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
