"""Walltime parsing and formatting.

Users type durations many ways (``2h``, ``30m``, ``1.5d``, ``2:59:00``, ``1-12:00:00``); Slurm
wants ``[D-]HH:MM:SS``.  One parser here so the CLI, the TUI form and config validation agree.
"""

from __future__ import annotations

import re

from rv_tui.errors import RvError


class DurationError(RvError):
    """A duration string that cannot be understood."""


_UNIT_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HINT = "use 2h, 30m, 1.5d, HH:MM:SS, MM:SS or D-HH:MM:SS"


def parse_duration(text: str) -> int:
    """Return *text* as whole seconds; raise :class:`DurationError` when it is not a duration."""
    raw = text
    text = text.strip()
    if not text:
        raise DurationError("empty duration", hint=_HINT)
    m = _UNIT_RE.match(text)
    if m:
        seconds = round(float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()])
    else:
        days = 0
        rest = text
        if "-" in text:
            day_part, rest = text.split("-", 1)
            if not day_part.isdigit():
                raise DurationError(f"{raw!r} is not a duration", hint=_HINT)
            days = int(day_part)
        parts = rest.split(":")
        if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
            raise DurationError(f"{raw!r} is not a duration", hint=_HINT)
        nums = [int(p) for p in parts]
        if len(parts) == 3:
            h, mi, s = nums
        elif len(parts) == 2:
            # Slurm reads "A:B" as minutes:seconds without a day part, hours:minutes with one.
            (h, mi, s) = (nums[0], nums[1], 0) if "-" in text else (0, nums[0], nums[1])
        else:
            (h, mi, s) = (nums[0], 0, 0) if "-" in text else (0, nums[0], 0)
        if (len(parts) > 1 and (mi > 59 or s > 59)) or (len(parts) == 3 and mi > 59):
            raise DurationError(f"{raw!r} has minutes or seconds above 59", hint=_HINT)
        seconds = days * 86400 + h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise DurationError(f"{raw!r} is not a positive duration", hint=_HINT)
    return seconds


def format_slurm(seconds: int) -> str:
    """Seconds as Slurm's ``[D-]HH:MM:SS``."""
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"


def format_human(seconds: float) -> str:
    """Short human form for tables: ``45s``, ``12m``, ``2h 5m``, ``3d 4h``."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}m {s}s" if s and m < 10 else f"{m}m"
    if seconds < 86400:
        h, rem = divmod(seconds, 3600)
        return f"{h}h {rem // 60}m" if rem // 60 else f"{h}h"
    d, rem = divmod(seconds, 86400)
    return f"{d}d {rem // 3600}h" if rem // 3600 else f"{d}d"


def parse_slurm_time(text: str) -> int | None:
    """Parse a squeue/scontrol time field (``M:SS``, ``H:MM:SS``, ``D-HH:MM:SS``); None if unset."""
    text = text.strip()
    if text in {"", "UNLIMITED", "INVALID", "N/A", "NOT_SET", "Partition_Limit"}:
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    nums = [int(p) for p in text.split(":")]
    while len(nums) < 3:
        nums.insert(0, 0)
    h, m, s = nums[-3:]
    return days * 86400 + h * 3600 + m * 60 + s
