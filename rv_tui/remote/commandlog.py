"""A bounded, observable record of every command the pool sends.

The TUI shows it as a command log ("what is rv doing on my cluster?") and bug reports
include it. Every entry is masked where it is recorded (:meth:`CommandLog.record`), so no
listener, pane or report ever sees a raw credential: callers keep secrets out of command
strings (env values and requirement files travel by SFTP), and :func:`redact` masks URL
credentials (``scheme://user:pass@``, ``scheme://token@``), ``KEY=value`` secrets and
well-known token shapes anyway, as a second line of defence.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rv_tui.masking import mask_secrets

log = logging.getLogger(__name__)


def redact(command: str) -> str:
    """Mask secrets in a command (:func:`rv_tui.masking.mask_secrets`: URL credentials such as
    ``https://user:TOKEN@``, ``API_KEY=...``, ``--token x``, ``sk-...``, ``hf_...``)."""
    return mask_secrets(command)


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
        if error and self.redactor:  # error texts quote the command or its stderr
            error = self.redactor(error)
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
