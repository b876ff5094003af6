"""asyncssh worker pool: one connection per cluster, channel cap, batches, streams, SFTP,
reconnect, typed errors and a command log. See :mod:`rv_tui.remote.pool`."""

from rv_tui.remote.commandlog import CommandLog, CommandRecord, redact
from rv_tui.remote.errors import (
    AuthFailed,
    CommandTimeout,
    ConnectionLost,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    HostUnreachable,
    RemoteCommandFailed,
    RemoteError,
    RemoteFileError,
    RemoteFileNotFound,
)
from rv_tui.remote.pool import CommandResult, ConnectionEvent, RemotePool, RemoteStream
from rv_tui.remote.target import SshTarget

__all__ = [
    "AuthFailed", "CommandLog", "CommandRecord", "CommandResult", "CommandTimeout", "ConnectionEvent",
    "ConnectionLost", "HostKeyChanged", "HostKeyError", "HostKeyUnknown", "HostUnreachable",
    "RemoteCommandFailed", "RemoteError", "RemoteFileError", "RemoteFileNotFound", "RemotePool",
    "RemoteStream", "SshTarget", "redact",
]
