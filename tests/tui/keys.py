"""Key-only helpers for Pilot tests: everything is typed, tabbed, escaped, never set.

A user has a keyboard, not ``widget.value = ...``; these helpers press the keys a user would so
the tests prove the focus chain, the bindings and normal mode, not just the handlers.
"""

from __future__ import annotations

from textual.pilot import Pilot

#: Characters Textual names differently as keys.
_KEY_NAMES = {" ": "space", "/": "slash", ".": "full_stop", "-": "minus", ":": "colon",
              "_": "underscore", "=": "equals_sign", "'": "apostrophe", '"': "quotation_mark",
              "$": "dollar_sign", "(": "left_parenthesis", ")": "right_parenthesis",
              ",": "comma", "+": "plus", "?": "question_mark", "*": "asterisk",
              ";": "semicolon", "<": "less_than_sign", ">": "greater_than_sign",
              "&": "ampersand", "|": "vertical_line", "#": "number_sign", "[": "left_square_bracket",
              "]": "right_square_bracket", "!": "exclamation_mark", "@": "at", "~": "tilde",
              "`": "grave_accent", "%": "percent_sign", "^": "circumflex_accent",
              "{": "left_curly_bracket", "}": "right_curly_bracket", "\\": "backslash"}


def key_names(text: str) -> list[str]:
    return [_KEY_NAMES.get(c, c) for c in text]


async def type_text(pilot: Pilot, text: str) -> None:
    await pilot.press(*key_names(text))


async def replace_text(pilot: Pilot, text: str) -> None:
    """In the focused Input: go to the end, delete everything to the left, type ``text``."""
    await pilot.press("end", "ctrl+u")
    await type_text(pilot, text)


async def focus_field(pilot: Pilot, widget_id: str, *, max_tabs: int = 20) -> None:
    """Tab (forwards) until the widget with ``widget_id`` has focus."""
    for _ in range(max_tabs):
        if pilot.app.focused is not None and pilot.app.focused.id == widget_id:
            return
        await pilot.press("tab")
    raise AssertionError(f"tab never reached #{widget_id} (focus: {pilot.app.focused})")


async def pick_option(pilot: Pilot, search: str) -> None:
    """In the focused (closed) Select: open it, type to search, choose the match."""
    await pilot.press("enter")
    await pilot.pause()
    await type_text(pilot, search)
    await pilot.press("enter")
    await pilot.pause()
