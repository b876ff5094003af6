"""Rules for each config value (durations, GPU types, users, hosts, paths, ports, e-mails, URLs).

Why its own module: the schema names a rule per key and ``rv init`` checks a typed value with
the same rule before writing it; each rule returns a problem text or None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rv_tui.errors import RvError

# --------------------------------------------------------------------------- validation

_DURATION_HINT = "use 2h, 30m, 1.5d, HH:MM:SS"


def _fallback_parse_duration(text: str) -> int:
    """Minimal duration parser used only if rv_tui.durations is unavailable."""
    t = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", t, re.IGNORECASE)
    if m:
        secs = round(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()])
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", t)
        if not m:
            raise ValueError(text)
        d, a, b, c = m.groups()
        nums = [int(x) for x in (a, b, c) if x is not None]
        if len(nums) == 3:
            h, mi, s = nums
        elif len(nums) == 2:
            h, mi, s = (nums[0], nums[1], 0) if d else (0, nums[0], nums[1])
        else:
            h, mi, s = (nums[0], 0, 0) if d else (0, nums[0], 0)
        if mi > 59 or s > 59:
            raise ValueError(text)
        secs = int(d or 0) * 86400 + h * 3600 + mi * 60 + s
    if secs <= 0:
        raise ValueError(text)
    return secs


def _parse_duration(text: str) -> int:
    try:
        from rv_tui.durations import parse_duration
    except Exception:  # pragma: no cover - only while durations.py is missing
        return _fallback_parse_duration(text)
    return parse_duration(text)


_FALLBACK_GPU_TYPES = {"a100", "a100_80", "a100_40", "a6000", "a40", "h200", "h100", "v100", "rtx3090", "mig"}


def _check_gpu_type(value: str) -> str | None:
    if value.strip().lower() == "any":
        return None
    try:
        from rv_tui.gpus import resolve_gpu_type
    except Exception:  # pragma: no cover - only while gpus.py is missing
        if value.strip().lower() in _FALLBACK_GPU_TYPES:
            return None
        return "is not a known GPU type (use any, " + ", ".join(sorted(_FALLBACK_GPU_TYPES)) + ")"
    try:
        resolve_gpu_type(value)
    except RvError as exc:
        return "is not a known GPU type" + (f" ({exc.hint})" if exc.hint else "")
    except Exception:
        return "is not a known GPU type"
    return None


_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
_HOST_ALIAS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]*$")
_SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def _str_rule(pattern: re.Pattern[str] | None = None, what: str = "") -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return "must be a string"
        if not v.strip():
            return "must not be empty"
        if pattern is not None and not pattern.match(v):
            return f"is not a valid {what}"
        return None

    return check


def _path_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not v.startswith("/"):
        return "must be an absolute path (starting with /)"
    if "\n" in v or "\0" in v:
        return "must not contain newlines"
    return None


def _local_path_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not v.strip():
        return "must not be empty"
    return None


def _bool_rule(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _port_rule(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return "must be an integer port number (1-65535)"
    if not 1 <= v <= 65535:
        return "is not a valid port (use 1-65535)"
    return None


def _time_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string duration ({_DURATION_HINT})"
    try:
        _parse_duration(v)
    except (RvError, ValueError):
        return f"is not a duration ({_DURATION_HINT})"
    return None


def _gpu_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    return _check_gpu_type(v)


def _email_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
        return "is not an email address"
    return None


def _url_rule(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not re.fullmatch(r"https?://\S+", v):
        return "is not an http(s) URL"
    return None



def _plain(value: Any) -> Any:
    """tomlkit items -> plain Python values."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    return value
