"""UVA site tools: ``allocations`` (SU balance per account) and ``hdquota`` (storage use).

Why a module of its own: these are not Slurm commands, and a plain Slurm cluster does not have
them.  This module is pure (the command string and text -> dataclass parsers); fetching over a
:class:`~rv_tui.cluster.base.Cluster` is :func:`rv_tui.account.fetch_site_info`.  Output that is not
the expected table (a missing tool, shell noise) parses to nothing, so the faces leave it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: Splits the combined output of :data:`SITE_COMMAND` (never printed by either tool).
SITE_DELIMITER = "___RV_SITE_HDQUOTA___"

#: Both tools in one command; a missing tool prints nothing (its "not found" goes to /dev/null)
#: and the command always succeeds.  No user value is interpolated (nothing to quote).
SITE_COMMAND = f"allocations 2>/dev/null; echo {SITE_DELIMITER}; hdquota 2>/dev/null; true"

#: How long the faces wait for the site tools (``allocations`` queries the accounting database).
SITE_TIMEOUT_S = 20.0

_ACCOUNT_RE = re.compile(r"^([A-Za-z0-9._-]+)\s+([\d,]+(?:\.\d+)?)\s+([\d,]+(?:\.\d+)?)\s+([\d,]+(?:\.\d+)?)\s*$")
_SIZE = r"([\d.]+)\s*([KMGTPE]i?B?|B|bytes)?"
_QUOTA_RE = re.compile(rf"^(.+?)\s+(/\S+)\s+{_SIZE}\s+{_SIZE}\s+{_SIZE}\s+(\d+(?:\.\d+)?)%\s*$", re.I)
_UNITS = {"": 1, "B": 1, "BYTES": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4,
          "P": 1024 ** 5, "E": 1024 ** 6}


@dataclass(frozen=True)
class Allocation:
    """One row of ``allocations``: an account and its service units (SUs)."""

    account: str
    balance_su: float  # the allocation's balance column
    reserved_su: float  # held by queued/running jobs
    available_su: float  # what is left to spend (the original shows this as "remaining")

    @property
    def used_su(self) -> float:
        return max(0.0, self.balance_su - self.available_su)

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "balance_su": self.balance_su, "reserved_su": self.reserved_su,
                "available_su": self.available_su, "used_su": self.used_su}


@dataclass(frozen=True)
class StorageQuota:
    """One row of ``hdquota``: a filesystem the user may write to, with its use."""

    storage_type: str  # "Home Directory", "Scratch Directory", "Project Storage", ...
    location: str
    size_bytes: int
    used_bytes: int
    avail_bytes: int
    use_percent: float  # as the tool says it (the authoritative figure)

    @property
    def level(self) -> str:
        """``red`` above 80 %, ``yellow`` above 60 %, else ``green`` (the original's colours)."""
        return "red" if self.use_percent > 80 else "yellow" if self.use_percent > 60 else "green"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.storage_type, "location": self.location, "size_bytes": self.size_bytes,
                "used_bytes": self.used_bytes, "avail_bytes": self.avail_bytes,
                "use_percent": self.use_percent, "level": self.level}


@dataclass(frozen=True)
class SiteInfo:
    """What the site tools said; both tuples are empty on a cluster without them."""

    allocations: tuple[Allocation, ...] = ()
    storage: tuple[StorageQuota, ...] = ()
    error: str | None = None  # why nothing could be read (timeout, connection), for --json

    def account(self, preferred: str | None = None) -> Allocation | None:
        """The configured account's row when listed, else the first (the original's choice)."""
        if preferred:
            for a in self.allocations:
                if a.account == preferred:
                    return a
        return self.allocations[0] if self.allocations else None

    def to_json(self, preferred: str | None = None) -> dict[str, Any]:
        acct = self.account(preferred)
        return {"account": acct.to_json() if acct else None,
                "allocations": [a.to_json() for a in self.allocations],
                "storage": [s.to_json() for s in self.storage], "error": self.error}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_allocations(text: str) -> list[Allocation]:
    """Rows of UVA's ``allocations`` table (``Account Balance Reserved Available``).

    Headers, rules, the trailing help text and anything else that is not
    ``name number number number`` is skipped, so stray shell noise cannot become an account.
    """
    out: list[Allocation] = []
    for line in text.splitlines():
        m = _ACCOUNT_RE.match(line.strip())
        if m and m.group(1).lower() != "account":
            out.append(Allocation(m.group(1), _number(m.group(2)), _number(m.group(3)), _number(m.group(4))))
    return out


def allocation_accounts(text: str) -> list[str]:
    """Just the account names of :func:`parse_allocations` (what ``rv init`` offers)."""
    return [a.account for a in parse_allocations(text)]


def _bytes(value: str, unit: str | None) -> int:
    u = (unit or "").upper().replace("IB", "").rstrip("B") if (unit or "").upper() != "BYTES" else "B"
    return int(float(value) * _UNITS.get(u, 1))


def parse_hdquota(text: str) -> list[StorageQuota]:
    """Rows of ``hdquota`` (``Type Location Size Used Avail Use%``; multi-word types; sizes as
    ``200 GB``, ``1.2 TB`` or ``200G``; binary multipliers, as the original)."""
    out: list[StorageQuota] = []
    for line in text.splitlines():
        m = _QUOTA_RE.match(line.strip())
        if not m:
            continue
        kind = m.group(1).strip()
        if kind.lower().startswith(("storage type", "type")):
            continue
        out.append(StorageQuota(kind, m.group(2), _bytes(m.group(3), m.group(4)),
                                _bytes(m.group(5), m.group(6)), _bytes(m.group(7), m.group(8)),
                                float(m.group(9))))
    return out


def parse_site_output(stdout: str) -> SiteInfo:
    """Split :data:`SITE_COMMAND`'s output and parse both halves."""
    alloc, sep, quota = stdout.partition(SITE_DELIMITER)
    if not sep:  # the delimiter line is missing: the shell did not run our command as written
        return SiteInfo()
    return SiteInfo(tuple(parse_allocations(alloc)), tuple(parse_hdquota(quota)))


__all__ = ["Allocation", "SITE_COMMAND", "SITE_DELIMITER", "SITE_TIMEOUT_S", "SiteInfo", "StorageQuota",
           "allocation_accounts", "parse_allocations", "parse_hdquota", "parse_site_output"]
