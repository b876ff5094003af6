"""Normal mode: single-key actions never fire while the user is typing.

The dashboard is keyboard first: digits switch panes, ``?`` helps, ``q`` quits and every pane has
one-letter actions.  Those keys are text while a field has focus, so a pane's (or the app's)
``check_action`` asks :func:`typing` and refuses a binding whose keys are all printable while an
``Input`` or a ``Select`` (open or closed: it searches as you type) has focus.  Escape leaves the
field for the pane's normal-mode widget (see ``RvApp.action_normal_mode``).
"""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.widgets import Input, Select, TextArea

#: Key names that type a character (besides single characters).
_PRINTABLE_NAMES = {"slash", "question_mark", "space", "full_stop", "comma", "minus", "plus"}


def typing(app: Any) -> bool:
    """Whether the focused widget takes printable keys as text (a field or a Select)."""
    node = getattr(app, "focused", None)
    while node is not None:
        if isinstance(node, (Input, TextArea, Select)):
            return True
        node = getattr(node, "parent", None)
    return False


def _printable(key: str) -> bool:
    return len(key) == 1 or key in _PRINTABLE_NAMES


def letter_actions(bindings: list[Any]) -> set[str]:
    """Actions bound only to printable keys (``s``, ``/``, ``1``): the ones typing must not fire."""
    out: set[str] = set()
    for b in bindings:
        if not isinstance(b, Binding):
            continue
        keys = [k.strip() for k in b.key.split(",")]
        if keys and all(_printable(k) for k in keys):
            out.add(b.action.split("(", 1)[0])  # check_action gets the name without arguments
    return out


class KeyGuard:
    """Mixin for panes: refuse their one-letter actions while a field has focus."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        bindings = getattr(type(self), "BINDINGS", [])
        if typing(getattr(self, "app", None)) and action in letter_actions(bindings):
            return False
        return True
