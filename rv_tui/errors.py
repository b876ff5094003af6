"""Base error type for everything rv-tui shows to a user.

Faces (CLI and TUI) catch :class:`RvError` and print ``message`` plus ``hint``;
anything else escaping is a bug. Keeping the hint separate lets the TUI render it
differently (dimmed, on its own line) while ``str()`` still reads well in logs.
"""

from __future__ import annotations


class RvError(Exception):
    """A user-facing error with an optional actionable hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.hint: str | None = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, hint={self.hint!r})"
