"""A bounded, observable record of every command the pool sends.

The TUI shows it as a command log ("what is rv doing on my cluster?") and bug reports
include it. Commands are recorded as sent; callers must keep secrets out of command
strings (env values travel by SFTP), but :func:`redact` masks obvious ``KEY=value``
secrets and well-known token shapes anyway, as a second line of defence.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

_SECRET_NAME = r"[A-Za-z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)[A-Za-z0-9_]*"
_VALUE = r"""(?:'[^']*'|"(?:[^"\\]|\\.)*"|[^\s;&|]+)"""
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?i)\b({_SECRET_NAME})=({_VALUE})"), r"\1=****"),
    (re.compile(rf"(?i)(--?(?:{_SECRET_NAME})[ =])({_VALUE})"), r"\1****"),
    (re.compile(r"""(?i)(authorization:\s*(?:bearer|token|basic)\s+)[^\s"']+"""), r"\1****"),
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{8,}"), "sk-****"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), "hf_****"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{8,}"), "gh_****"),
]


def redact(command: str) -> str:
    """Mask obvious secrets (``API_KEY=...``, ``--token x``, ``sk-...``, ``hf_...``) in a command."""
    for pattern, repl in _PATTERNS:
        command = pattern.sub(repl, command)
    return command


@dataclass(frozen=True)
class CommandRecord:
    """One command as the pool ran it."""

    command: str  # redacted
    started_at: float  # time.time()
    duration: float  # seconds
    exit_status: int | None  # None: no status (timeout, drop, signal, SFTP)
    error: str | None = None  # short description when it did not complete normally
    kind: str = "run"  # run | batch | stream | sftp | kill


Listener = Callable[[CommandRecord], None]


class CommandLog:
    """Bounded deque of :class:`CommandRecord` with change listeners."""

    def __init__(self, maxlen: int = 500, redactor: Callable[[str], str] | None = redact) -> None:
        self._records: deque[CommandRecord] = deque(maxlen=maxlen)
        self._listeners: list[Listener] = []
        self.redactor = redactor
        self.total = 0  # number of records ever added (the deque forgets old ones)

    def add_listener(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(record)`` for each new record; returns a function that removes it."""
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def remove_listener(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def record(self, command: str, *, started_at: float, duration: float, exit_status: int | None,
               error: str | None = None, kind: str = "run") -> CommandRecord:
        text = self.redactor(command) if self.redactor else command
        rec = CommandRecord(text, started_at, duration, exit_status, error, kind)
        self._records.append(rec)
        self.total += 1
        for cb in list(self._listeners):
            try:
                cb(rec)
            except Exception:  # a broken listener must not break the pool
                log.exception("command log listener failed")
        return rec

    def records(self) -> list[CommandRecord]:
        return list(self._records)

    def __iter__(self) -> Iterator[CommandRecord]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        self._records.clear()


def now() -> float:
    return time.time()
