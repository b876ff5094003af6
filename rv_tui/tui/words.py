"""Small wording helpers shared by the panes (plurals that read right for one)."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 strategy``, ``2 strategies``, ``1 job``, ``3 jobs``."""
    if n == 1:
        return f"1 {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"
    return f"{n} {many}"
