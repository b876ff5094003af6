"""Typed SSH failures, each with a hint the user can act on.

asyncssh and the OS raise a zoo of exceptions (OSError, gaierror, PermissionDenied,
HostKeyNotVerifiable, ChannelOpenError, ...). The pool translates them into these few
classes so faces can show one clear message and fix-it hint, and so callers can decide
what is retryable (HostUnreachable, ConnectionLost) and what is not (auth, host keys).
"""

from __future__ import annotations

from rv_tui.errors import RvError


class RemoteError(RvError):
    """Base of every error raised by :mod:`rv_tui.remote`."""


class HostUnreachable(RemoteError):
    """TCP connection to the login node failed (DNS, refused, timeout)."""


class AuthFailed(RemoteError):
    """The server rejected every key we offered."""


class HostKeyError(RemoteError):
    """The server's host key could not be verified; never accepted silently."""

    def __init__(self, message: str, hint: str | None = None, *, host: str = "", port: int = 22,
                 known_hosts: str | None = None, fingerprint: str | None = None) -> None:
        super().__init__(message, hint)
        self.host = host
        self.port = port
        self.known_hosts = known_hosts
        self.fingerprint = fingerprint


class HostKeyUnknown(HostKeyError):
    """No key for this host in known_hosts."""


class HostKeyChanged(HostKeyError):
    """known_hosts has a key for this host and the server presented a different one."""


class ConnectionLost(RemoteError):
    """The SSH connection dropped (or is not up) while a command needed it."""


class CommandTimeout(RemoteError):
    """A remote command ran longer than its timeout; its channel was closed and it was killed."""

    def __init__(self, message: str, hint: str | None = None, *, command: str = "",
                 timeout: float = 0.0) -> None:
        super().__init__(message, hint)
        self.command = command
        self.timeout = timeout


class RemoteCommandFailed(RemoteError):
    """A command run with ``check=True`` exited non-zero."""

    def __init__(self, message: str, hint: str | None = None, *, command: str = "",
                 exit_status: int | None = None, stderr: str = "") -> None:
        super().__init__(message, hint)
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr


class RemoteFileError(RemoteError):
    """An SFTP read or write failed."""

    def __init__(self, message: str, hint: str | None = None, *, path: str = "") -> None:
        super().__init__(message, hint)
        self.path = path


class RemoteFileNotFound(RemoteFileError):
    """The remote file does not exist."""
