"""Mask secrets in text before it is shown, logged or sent anywhere (command log, AI naming).

Why one core module: the TUI's command log, bug reports and the AI naming request all carry
command text that may hold a credential the user typed or rv handled (an index URL with a
token, an ``API_KEY=...`` assignment, an ``hf_...`` token, a value from ``rv env``).  Every
place masks with the same rules, and each rule is tested with hostile inputs.

Rules (each replaced by ``****``): the password of ``scheme://user:password@`` (or the whole
``scheme://token@`` user part); the value of ``NAME=value`` / ``--name value`` when NAME looks
like a credential; well-known token shapes (``sk-``, ``sk-ant-``, ``hf_``, ``ghp_``/``gho_``/...,
``github_pat_``, ``glpat-``, ``xox?-``, ``pypi-``, ``AKIA...``); ``Authorization:`` header values;
and any caller-given secret value (e.g. the ``rv env`` values).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "mask_secrets", "mask_url_credentials", "mask_values"]

MASK = "****"

_SECRET_NAME = r"[A-Za-z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)[A-Za-z0-9_]*"
_VALUE = r"""(?:'[^']*'|"(?:[^"\\]|\\.)*"|[^\s;&|]+)"""
_URL_CREDS = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@:'\"]*)(?::(?P<pw>[^\s/@'\"]*))?@(?=[^\s/@'\"])")
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?i)\b({_SECRET_NAME})=({_VALUE})"), rf"\1={MASK}"),
    (re.compile(rf"(?i)(--?(?:{_SECRET_NAME})[ =])({_VALUE})"), rf"\1{MASK}"),
    (re.compile(r"""(?i)(authorization:\s*(?:bearer|token|basic)\s+)[^\s"']+"""), rf"\1{MASK}"),
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{8,}"), f"sk-{MASK}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), f"hf_{MASK}"),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{8,}"), f"github_pat_{MASK}"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{8,}"), f"gh_{MASK}"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{8,}"), f"glpat-{MASK}"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"), f"xox-{MASK}"),
    (re.compile(r"\bpypi-[A-Za-z0-9_-]{16,}"), f"pypi-{MASK}"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), f"AKIA{MASK}"),
]
#: caller-given values shorter than this are not masked (``4``, ``true``: masking them would
#: garble the text and protect nothing)
MIN_VALUE_LEN = 6


def _url_repl(m: re.Match[str]) -> str:
    if m.group("pw") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{MASK}@"
    return f"{m.group('scheme')}{MASK}@"


def mask_url_credentials(text: str) -> str:
    """``https://user:pass@host`` -> ``https://user:****@host``; ``https://tok@h`` -> ``https://****@h``."""
    return _URL_CREDS.sub(_url_repl, text)


def mask_values(text: str, values: Iterable[str]) -> str:
    """Replace every occurrence of each given secret value (longest first) with ``****``."""
    for v in sorted({v for v in values if v and len(v) >= MIN_VALUE_LEN}, key=len, reverse=True):
        text = text.replace(v, MASK)
    return text


def mask_secrets(text: str, values: Iterable[str] = ()) -> str:
    """All the rules of this module: known values, URL credentials, secret assignments, tokens."""
    text = mask_values(text, values)
    text = mask_url_credentials(text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
